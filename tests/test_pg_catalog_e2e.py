"""The shared catalog on PostgreSQL, end to end through the CLI on a real server.

Nightly incremental backups → restore → forget → prune → verify, and rebuild-catalog
into an empty PostgreSQL catalog; two backups at once on one catalog (the advisory run
lock refuses the second); a backup SIGKILLed mid-run leaves nothing marked complete,
and the server drops its run lock with its connection.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import device_garbage, pause_point, volumes_on, wait_paused
from parbackup.catalog import open_catalog
from parbackup.catalog.liveness import set_of_volume

pytestmark = pytest.mark.slow  # real processes and a real server: not in the quick subset


def dargs(devs: list) -> list[str]:
    return [a for d in devs for a in ("-d", str(d))]


def statuses(url: str) -> dict[str, str]:
    with open_catalog(url, create=False) as catalog:
        return {s.id: s.status for s in catalog.sets()}


def restores_exactly(tmp_path: Path, url: str, set_id: str, tree: Path, want: dict) -> None:
    out = tmp_path / f"out-{set_id[:8]}-{len(list(tmp_path.iterdir()))}"
    r = run_cli("restore", "--set", set_id, "--target", str(out), "--catalog", url)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == want, set_id


def change(tree: Path, night: int) -> None:
    rng = random.Random(night)
    for i in range(3):
        path = tree / f"file{(night * 3 + i) % 30}.bin"
        if path.exists():
            path.write_bytes(rng.randbytes(50_000))
            os.utime(path, ns=(10**18 + night * 10**9 + i,) * 2)


def test_backup_restore_forget_prune_and_rebuild_on_postgres(tmp_path, device_dirs, pg_server):
    url = pg_server.create_db("e2e_main")
    tree = make_tree(tmp_path / "src", seed=3, files=40, max_size=120_000)
    devs = device_dirs(2)
    nights, want = [], {}
    for night in range(4):
        change(tree, night)
        r = run_cli(
            "backup", str(tree), *dargs(devs), "--catalog", url, "--incremental",
            "--time", f"2026-03-0{night + 1}T02:00:00+00:00", "--json",
        )  # fmt: skip
        assert r.code == 0, r.err
        assert r.json["status"] == "complete" and r.json["kind"] == (
            "incremental" if night else "full"
        )
        nights.append(r.json["set"])
        want[r.json["set"]] = snapshot(tree)
    # incremental reuse: later sets point into earlier sets' volumes
    with open_catalog(url, create=False) as catalog:
        origins = {ref.origin_set for _, ref in catalog.records(nights[-1])} - {""}
    assert origins and origins <= set(nights[:-1])
    r = run_cli("sets", "--catalog", url, "--json")
    assert r.code == 0, r.err
    assert "s3cret" not in r.out
    restores_exactly(tmp_path, url, nights[-1], tree, want[nights[-1]])
    # the catalog copy on every device is a SQLite file holding the same sets
    for d in devs:
        copy = d / "catalog" / "catalog.sqlite"
        with sqlite3.connect(copy) as db:
            got = dict(db.execute("SELECT id, status FROM sets").fetchall())
        assert got == statuses(url)
    # forget the two oldest, prune: the kept sets restore, nothing reclaimable is left
    r = run_cli("forget", "--keep-last", "2", "--prune", "--catalog", url, "--json")
    assert r.code == 0, r.err
    st = statuses(url)
    assert [st[s] for s in nights[-2:]] == ["complete", "complete"]
    assert all(st.get(s, "gone") in ("forgotten", "gone") for s in nights[:2])
    assert device_garbage(devs, url) == {}
    assert {set_of_volume(name) for _, name in volumes_on(devs)} <= set(st)
    for set_id in nights[-2:]:
        restores_exactly(tmp_path, url, set_id, tree, want[set_id])
    r = run_cli("prune", "--orphans", "--catalog", url, "--json")
    assert r.code == 0, r.err
    r = run_cli("verify", "--set", nights[-1], "--catalog", url, "--json")
    assert r.code == 0, r.out
    # rebuild-catalog writes into an empty PostgreSQL catalog only
    r = run_cli("rebuild-catalog", *dargs(devs), "--catalog", url)
    assert r.code == 2 and "holds sets" in r.err, r.err
    fresh = pg_server.create_db("e2e_rebuilt")
    r = run_cli("rebuild-catalog", *dargs(devs), "--catalog", fresh, "--json")
    assert r.code in (0, 3), r.err  # incremental sets are rebuilt with a note
    assert "s3cret" not in r.out
    rebuilt = statuses(fresh)
    assert {rebuilt[s] for s in nights[-2:]} <= {"complete", "degraded"}  # incremental
    full = run_cli("backup", str(tree), *dargs(devs), "--catalog", fresh, "--json")
    assert full.code == 0, full.err
    restores_exactly(tmp_path, fresh, full.json["set"], tree, snapshot(tree))


def backup_popen(tree: Path, urls: list[str], url: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "parbackup", "backup", str(tree), *dargs(urls), "--catalog", url]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_backups_at_once_one_is_refused_by_the_run_lock(tmp_path, device_dirs, pg_url):
    tree = make_tree(tmp_path / "src", seed=5, files=20, big=(3 << 20,))
    devs = device_dirs(2)
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    first = backup_popen(
        tree, [f"faulty+file://{devs[0]}?pause_after=1M&gate={gate}", devs[1]], pg_url
    )
    try:
        assert wait_paused(first, fifo)  # the first backup is writing, holding the lock
        second = run_cli("backup", str(tree), *dargs(devs), "--catalog", pg_url)
        assert second.code == 1
        holder = f"parbackup pid {first.pid} on {socket.gethostname()}"
        assert f"is in use by another backup ({holder})" in second.err, second.err
        assert "s3cret" not in second.err
    finally:
        gate.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert list(statuses(pg_url).values()) == ["complete"]


def _wait_gone(pg_server, pid: int) -> None:
    """Until the server has ended the killed run's session (and so dropped its lock)."""
    deadline = time.monotonic() + 60
    name = f"parbackup pid {pid} on %"
    sql = f"SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '{name}'"
    while pg_server.psql(sql).strip() != "0":
        assert time.monotonic() < deadline, "the killed run's session stayed"
        time.sleep(0.05)


@pytest.mark.parametrize("moment", ["pause_after=1M", "pause_commit=1"])
def test_a_killed_backup_leaves_nothing_marked_complete(
    tmp_path, device_dirs, pg_server, pg_url, moment
):
    tree = make_tree(tmp_path / "src", seed=6, files=20, big=(3 << 20,))
    devs = device_dirs(2)
    r = run_cli("backup", str(tree), *dargs(devs), "--catalog", pg_url, "--json")
    assert r.code == 0, r.err
    first, want = r.json["set"], snapshot(tree)
    (tree / "file0.bin").write_bytes(b"changed after the first set")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    proc = backup_popen(tree, [f"faulty+file://{devs[0]}?{moment}&gate={gate}", devs[1]], pg_url)
    assert wait_paused(proc, fifo)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    gate.touch()
    st = statuses(pg_url)
    assert st[first] == "complete"
    killed = [s for s in st if s != first]
    assert [st[s] for s in killed] == ["running"]  # begun, never marked complete
    _wait_gone(pg_server, proc.pid)
    with open_catalog(pg_url) as catalog:
        catalog.lock_for_run()  # raises if held: the lock died with the run's connection
        assert {s.id: s.status for s in catalog.sets()}[killed[0]] == "interrupted"
    r = run_cli("backup", str(tree), *dargs(devs), "--catalog", pg_url, "--json")
    assert r.code == 0, r.err
    st = statuses(pg_url)
    assert st[r.json["set"]] == "complete"
    assert st.get(killed[0], "gone") in ("interrupted", "gone")  # resumed, then dropped
    assert list(st.values()).count("complete") == 2
    restores_exactly(tmp_path, pg_url, first, tree, want)
    restores_exactly(tmp_path, pg_url, r.json["set"], tree, snapshot(tree))
