"""A backup killed after some files were made durable resumes: the next run reuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from killpoints import TOLD, killed_run

KILLED_RUN = (
    TOLD
    + """
import sys
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup
with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog,
               BackupOptions(checkpoint_bytes=512 << 10, chunk=128 << 10))
"""
)


def kill_mid_backup(tmp_path: Path, cat: str, tree: Path, devs: list[Path], pause: str) -> None:
    """Back up ``tree`` onto ``devs`` and SIGKILL the run once a device has written
    ``pause`` bytes (it waits there) and the catalog holds a checkpoint (real events:
    killpoints.killed_run, where this polled the catalog and slept)."""
    paused = killed_run(tmp_path, 0, cat, tree, devs, pause, KILLED_RUN, batches=1, told_by=1)
    assert paused, "the run ended before it could be killed"


@pytest.mark.slow
def test_killed_backup_resumes_from_what_was_durable(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=31, files=40, max_size=300_000, big=(4 << 20,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    kill_mid_backup(tmp_path, cat, tree, devs, "3MiB")
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
