"""The PostgreSQL catalog restarted in the middle of a backup (hostile8).

A restart ends every session, and with the backup's session its advisory run lock: a
second backup started meanwhile runs. The first stops at its next catalog call, in one
line naming the catalog (its password redacted), never a traceback, and never calls its
set complete; the second set verifies and restores byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from servers import process_tree
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


def _signal_server(pg_server, sig: int) -> None:
    """``sig`` to the postmaster and every backend it forked (the run's session among
    them): SIGSTOP freezes the server with its connections open, as a hung host would."""
    postmaster = int((pg_server.data / "postmaster.pid").read_text().split()[0])
    for pid in process_tree(postmaster):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def test_postgres_frozen_mid_backup_ends_it_in_one_line(
    tmp_path, device_dirs, pg_server, pg_url, monkeypatch
):
    """A server stopped (SIGSTOP) mid-backup kept the backup waiting for its answer for
    as long as it stayed stopped (its kernel acknowledges every byte: no TCP timeout
    fires). Now each wait ends after PARBACKUP_CATALOG_TIMEOUT seconds: exit 1, one line
    naming the catalog, the set never complete."""
    tree = make_tree(tmp_path / "src", seed=7, files=20, big=(3 << 20,))
    devs = device_dirs(2)
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    monkeypatch.setenv("PARBACKUP_CATALOG_TIMEOUT", "2")
    proc = backup_popen(
        tree, [f"faulty+file://{devs[0]}?pause_after=1M&gate={gate}", devs[1]], pg_url
    )
    try:
        assert wait_paused(proc, fifo)
        _signal_server(pg_server, signal.SIGSTOP)
        gate.touch()
        try:
            out, err = proc.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    finally:
        gate.touch()
        _signal_server(pg_server, signal.SIGCONT)
    assert proc.returncode == 1, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parbackup: error: catalog postgresql://")
    assert "no answer within 2 seconds" in lines[0] and "s3cret" not in lines[0]
    assert b"Traceback" not in out + err
    assert "complete" not in statuses(pg_url).values()
