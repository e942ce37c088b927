"""A lock file deleted by hand while its holder runs (session 18).

Deleting ``<catalog>.lock`` (a tmp cleaner, a script "clearing a stale lock") left the
running backup's flock on the deleted inode, and the next run made a new file and locked
that: tried in session 17, a prune then took the running backup's set for a dead run's,
marked it interrupted and deleted its volumes while they were written. A run now looks,
after taking the lock, for a process that holds a lock on a deleted file of that name
(``/proc/locks``) and is refused naming it; the lock is kept only on the inode the name
still names (the classic lock-file loop); the backup says at its end that its lock file
went. The same for the readers' lock: a prune is refused while a restore reads on a
deleted ``<catalog>.readers``. Real processes, real files; paused by the ``faulty+``
device's FIFO, no sleeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from fsfixtures import btrfs_missing, subvolume_fixture  # noqa: F401 (fixture)
from killpoints import pause_point, wait_paused
from parbackup.catalog.runlock import ReadLock, RunLock
from parbackup.errors import CatalogError

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="Linux /proc/locks")


def volumes(devs: list[Path]) -> set[Path]:
    return {p for d in devs for p in (d / "sets").rglob("*") if p.is_file()}


def test_a_prune_never_deletes_a_running_backup_whose_lock_file_was_deleted(
    tmp_path: Path, device_dirs
) -> None:
    src = make_tree(tmp_path / "src", seed=5, files=12, max_size=60_000, big=(400_000,))
    devs = device_dirs(2)
    cat = tmp_path / "cat.sqlite"
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{devs[0]}?pause_after=200K&gate={gate}", str(devs[1])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", str(src), "--catalog", str(cat),
         "--json", *[a for u in urls for a in ("-d", u)]],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        written = volumes(devs)
        assert written
        os.unlink(f"{cat}.lock")  # "a stale lock": the backup is alive and paused
        for args in (
            ("prune",),
            ("forget", "--keep-last", "1", "--prune"),
            ("backup", str(src), "-d", str(devs[1])),
        ):
            r = run_cli(*args, "--catalog", str(cat))
            assert r.code == 1, r.out + r.err
            assert (
                f"in use by another backup (pid {proc.pid}), whose lock file {cat}.lock was deleted"
                in r.err
            )
        assert volumes(devs) >= written  # nothing of the running set was deleted
        gate.touch()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, out.decode() + err.decode()  # done, with a warning
    doc = json.loads(out)
    assert doc["status"] == "complete"
    # the backup says its lock file went: another run could have been let in
    said = f"the run lock file {cat}.lock was deleted or replaced while this run held it"
    assert doc["error"].startswith(said), doc["error"]
    r = run_cli("verify", "--catalog", str(cat))
    assert r.code == 0, r.out + r.err


@contextlib.contextmanager
def held_elsewhere(lock: str, cat: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``lock`` ("RunLock(c).acquire", "ReadLock(c).share") on
    the catalog ``cat`` until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from parbackup.catalog.runlock import ReadLock, RunLock;"
         f"c = sys.argv[1]; {lock}(); print('held', flush=True); sys.stdin.read()",
         str(cat)],
        env={**os.environ, "PYTHONPATH": SRC},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait()


def test_a_prune_is_refused_while_a_reader_holds_a_deleted_readers_file(tmp_path: Path) -> None:
    cat = tmp_path / "cat.sqlite"
    with held_elsewhere("ReadLock(c).share", cat) as reader:  # a restore's shared lock
        os.unlink(f"{cat}.readers")
        prune = ReadLock(str(cat))
        with pytest.raises(
            CatalogError, match=rf"being read .*\(pid {reader.pid}, whose lock file"
        ):
            prune.exclusive()
        assert prune.fd < 0
    prune.exclusive()  # the reader gone, the prune runs
    prune.release()


@pytest.mark.root
@pytest.mark.skipif(bool(btrfs_missing()), reason=btrfs_missing())
def test_a_holder_of_a_deleted_lock_file_is_found_on_btrfs(subvolume: Path) -> None:
    """btrfs gives stat a subvolume's device number, /proc/locks the file system's: a
    holder found only where the two matched was never found there."""
    cat = subvolume / "cat.sqlite"
    run, read = RunLock(str(cat)), ReadLock(str(cat))
    try:  # released at the end whatever happened: a file left open keeps btrfs mounted
        with held_elsewhere("RunLock(c).acquire", cat) as backup:
            os.unlink(f"{cat}.lock")
            with pytest.raises(CatalogError, match=rf"backup \(pid {backup.pid}\), whose"):
                run.acquire()
        with held_elsewhere("ReadLock(c).share", cat) as reader:
            os.unlink(f"{cat}.readers")
            with pytest.raises(CatalogError, match=rf"being read .*\(pid {reader.pid}, whose"):
                read.exclusive()
        with held_elsewhere("ReadLock(c).exclusive", cat) as prune:
            os.unlink(f"{cat}.readers")
            with pytest.raises(CatalogError, match=rf"being pruned \(pid {prune.pid}\)"):
                read.share()
        assert run.acquire()  # every holder gone: nothing refused
    finally:
        run.release()
        read.release()


def test_the_lock_is_kept_only_on_the_file_its_name_still_names(
    tmp_path: Path, monkeypatch
) -> None:
    """The file deleted between a run's open and its flock (by another process, at the
    worst moment) is opened again: the lock held is on the file the name names."""
    cat = tmp_path / "cat.sqlite"
    lock = RunLock(str(cat))
    real = fcntl.flock
    deleted: list[int] = []

    def flock_after_a_deletion(fd: int, how: int) -> None:
        if not deleted and how & fcntl.LOCK_EX:
            deleted.append(os.fstat(fd).st_ino)
            os.unlink(lock.path)  # what another process did meanwhile
        real(fd, how)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_deletion)
    assert lock.acquire()
    monkeypatch.setattr(fcntl, "flock", real)
    try:
        assert deleted
        held = os.fstat(lock.fd)
        assert held.st_nlink == 1 and held.st_ino == os.stat(lock.path).st_ino
        assert lock.lost() == ""
        other = RunLock(str(cat))
        with pytest.raises(CatalogError, match="in use by another backup"):
            other.acquire()
        os.replace(tmp_path / _touch(tmp_path / "new"), lock.path)  # replaced under it
        assert "was deleted or replaced while this run held it" in lock.lost()
    finally:
        lock.release()


def _touch(path: Path) -> str:
    path.touch()
    return path.name


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_readers_lock_is_kept_only_on_the_file_its_name_still_names(
    tmp_path: Path, monkeypatch, how: str
) -> None:
    """The reader's side of the loop above: the readers' file deleted (or replaced)
    between a restore's open and its shared flock is opened again, so a prune that
    comes next meets the restore's lock rather than a fresh file nobody holds."""
    cat = tmp_path / "cat.sqlite"
    reader = ReadLock(str(cat))
    real = fcntl.flock
    swapped: list[bool] = []

    def flock_after_a_swap(fd: int, op: int) -> None:
        if not swapped and op & fcntl.LOCK_SH:
            swapped.append(True)
            if how == "deleted":  # what another process did meanwhile
                os.unlink(reader.path)
            else:
                os.replace(tmp_path / _touch(tmp_path / "new"), reader.path)
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_swap)
    reader.share()
    monkeypatch.setattr(fcntl, "flock", real)
    try:
        assert swapped and reader.fd >= 0
        held = os.fstat(reader.fd)  # (a freed inode's number may come back: not compared)
        assert held.st_nlink == 1 and held.st_ino == os.stat(reader.path).st_ino
        prune = ReadLock(str(cat))
        with pytest.raises(CatalogError, match="being read by a restore"):
            prune.exclusive()
        assert prune.fd < 0
    finally:
        reader.release()
