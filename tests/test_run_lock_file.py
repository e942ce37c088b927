"""What a run refused by the catalog's run lock is told about the lock file.

Deleting ``<catalog>.lock`` to clear what looks like a stale lock does not stop the run
holding it (the flock is on the deleted file's inode), and lets a second run in: tried
by hand in session 17, a prune then took a running backup's set for the set of a dead
run, marked it interrupted and deleted its volumes while the backup wrote them (the
backup failed at its end, "FOREIGN KEY constraint failed"). The refusal said only "wait
for it to finish"; it now says the lock is never stale and names the file not to delete.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_tree, run_cli
from parbackup.catalog.runlock import RunLock


def test_a_refused_run_is_told_the_lock_is_never_stale(tmp_path: Path, device_dirs) -> None:
    src = make_tree(tmp_path / "src", seed=2, files=3, max_size=2_000)
    devs = device_dirs(2)
    cat = tmp_path / "cat.sqlite"
    dargs = [a for d in devs for a in ("-d", str(d))]
    assert run_cli("backup", str(src), *dargs, "--catalog", str(cat)).code == 0
    lock = RunLock(str(cat))
    lock.acquire()  # this process stands for a running backup
    try:
        for args in (("prune",), ("backup", str(src), *dargs), ("forget", "--keep-last", "1")):
            r = run_cli(*args, "--catalog", str(cat))
            assert r.code == 1 and r.err.count("\n") == 1, r.err
            assert f"(pid {os.getpid()})" in r.err
            never = "The lock is never stale (it goes when that process ends): do not delete"
            assert f"{never} {cat}.lock" in r.err
    finally:
        lock.release()
