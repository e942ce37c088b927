"""The PostgreSQL catalog restarted in the middle of a backup (hostile8).

A restart ends every session, and with the backup's session its advisory run lock: a
second backup started meanwhile runs. The first stops at its next catalog call, in one
line naming the catalog (its password redacted), never a traceback, and never calls its
set complete; the second set verifies and restores byte for byte.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from test_pg_catalog_e2e import backup_popen, dargs, statuses

pytestmark = pytest.mark.slow


def _restart(pg_server) -> None:
    """``pg_ctl restart`` (fast: every session ended), its log to a file (the server
    would otherwise hold our pipe open)."""
    cmd = [f"{pg_server.bin}/pg_ctl", "-D", str(pg_server.data), "-m", "fast", "-w"]
    cmd += ["-l", str(pg_server.root / "log"), "restart"]
    if pg_server.as_postgres:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(
        cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
    )


@pytest.mark.parametrize("moment", ["pause_after=1M", "pause_commit=1"])
def test_postgres_restarted_mid_backup(tmp_path, device_dirs, pg_server, pg_url, moment):
    tree = make_tree(tmp_path / "src", seed=6, files=20, big=(3 << 20,))
    devs = device_dirs(2)
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    proc = backup_popen(tree, [f"faulty+file://{devs[0]}?{moment}&gate={gate}", devs[1]], pg_url)
    try:
        assert wait_paused(proc, fifo)
        _restart(pg_server)
        second = run_cli("backup", str(tree), *dargs(devs), "--catalog", pg_url, "--json")
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=200)
    assert second.code == 0, second.err
    assert proc.returncode == 1, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parbackup: error: catalog postgresql://")
    assert "s3cret" not in lines[0] and b"Traceback" not in out + err
    st = statuses(pg_url)
    assert [s for s, v in st.items() if v == "complete"] == [second.json["set"]], st
    r = run_cli("verify", "--catalog", pg_url, "--set", second.json["set"])
    assert r.code == 0, r.out + r.err
    target = tmp_path / "r"
    r = run_cli("restore", "--catalog", pg_url, "--target", str(target))
    assert r.code == 0, r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)
