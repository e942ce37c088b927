"""A backup killed after some files were made durable resumes: the next run reuses them."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot

KILLED_RUN = """
import sys
from parbackup.catalog import Catalog
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup
with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog,
               BackupOptions(checkpoint_bytes=512 << 10, chunk=128 << 10))
"""


def durable_records(cat: str) -> int:
    try:  # read-only: a plain connect would make an empty file the run then refuses
        db = sqlite3.connect(f"file:{cat}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return 0
    try:
        return db.execute(
            "SELECT COUNT(*) FROM records r JOIN sets s ON s.id = r.set_id"
            " WHERE s.status = 'running' AND r.size > 0"
        ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def kill_mid_backup(gate, cat: str, tree, devs, pause: str) -> None:
    """Back up ``tree`` onto ``devs`` and SIGKILL the run once records are durable and
    every device has written ``pause`` bytes (it waits there on ``gate``)."""
    faulty = [f"faulty+file://{d}?pause_after={pause}&gate={gate}" for d in devs]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, cat, str(tree), *faulty], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (durable_records(cat) and os.path.exists(f"{gate}.paused")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_killed_backup_resumes_from_what_was_durable(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=31, files=40, max_size=300_000, big=(4 << 20,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    kill_mid_backup(tmp_path / "gate", cat, tree, devs, "3MiB")
    r = run_cli("sets", "--catalog", cat, "--json")
    assert [s["status"] for s in r.json["sets"]] == ["running"]
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    assert 0 < r.json["reused"] < r.json["bytes"] + r.json["reused"]
    # the interrupted set's volumes hold the reused bytes: prune keeps what the new set
    # reads (and the set, which it points into), drops only what nothing reads
    r2 = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r2.code == 0, r2.err
    assert r2.json["forgotten"] == []
    r3 = run_cli("verify", "--catalog", cat, "--json")
    assert r3.code == 0, r3.out
    out = tmp_path / "out"
    r4 = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r4.code == 0, r4.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
