"""Several processes opening one brand-new catalog at the same instant all succeed.

Regression: switching a new SQLite file to WAL does not wait on the busy timeout, so a
second backup started together with the first failed with "database is locked" before
it ever reached the run lock (about one round in four of this test failed).
"""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from conftest import run_cli
from parbackup.catalog import Catalog


def _open(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        Catalog(path).close()
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


@pytest.mark.slow
def test_simultaneous_opens_of_a_new_catalog(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(20):
        path = str(tmp_path / f"c{round_}.sqlite")
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        got = [results.get(timeout=5) for _ in procs]
        assert got == ["ok"] * 3, got


@pytest.mark.parametrize("command", ["sets", "backup"])
def test_a_catalog_that_is_a_fifo_is_refused_not_waited_on(tmp_path, command):
    """SQLite's open of a FIFO waits for a writer for ever and retries through SIGTERM,
    so ``--catalog`` naming one hung every command, deaf to ``kill``; now it is refused
    in one line. (subprocess.run kills the child when its timeout passes.)"""
    fifo = tmp_path / "catalog.sqlite"
    os.mkfifo(fifo)
    src, dev0, dev1 = (tmp_path / n for n in ("src", "d0", "d1"))
    for d in (src, dev0, dev1):
        d.mkdir()
    (src / "f").write_bytes(b"data")
    args = [str(src), "-d", str(dev0), "-d", str(dev1)] if command == "backup" else []
    r = run_cli(command, *args, "--catalog", str(fifo), timeout=60)
    assert r.code == 1
    assert f"catalog {fifo} is not a regular file" in r.err and "Traceback" not in r.err


def test_a_symlink_planted_as_the_run_lock_is_never_followed(tmp_path):
    """``<catalog>.lock`` is truncated and written (the pid) by every backup: a symlink
    planted there (a shared or world-writable catalog directory; this machine's
    fs.protected_symlinks may be 0) made root truncate the file it names. Now the lock is
    opened without following a symlink, and the backup stops in one line."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    cat = tmp_path / "cat.sqlite"
    os.symlink(victim, str(cat) + ".lock")
    src, dev0, dev1 = (tmp_path / n for n in ("src", "d0", "d1"))
    for d in (src, dev0, dev1):
        d.mkdir()
    (src / "f").write_bytes(b"data")
    r = run_cli("backup", str(src), "-d", str(dev0), "-d", str(dev1), "--catalog", str(cat))
    assert r.code == 1 and "a symlink" in r.err and "Traceback" not in r.err, r.err
    assert victim.read_bytes() == b"precious\n"
