"""No prune deletes or compacts volumes under a restore, verify or repair.

Readers hold the catalog's readers' lock shared (``<catalog>.readers``, or an advisory
lock on PostgreSQL), a prune holds it alone; whoever comes second is refused at once
(catalog/runlock.py). Real processes: the restore is slowed by ``?limit=`` and stopped
with SIGSTOP once the kernel shows its lock (``/proc/locks``), so the prune is tried
while it is certainly mid-read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import open_catalog


def _locked_by(path: Path, pid: int) -> bool:
    """True when ``/proc/locks`` shows ``pid`` holding a lock on the file ``path``."""
    st = os.stat(path)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as fh:
        return any(f" {pid} {ident} " in line for line in fh)


def _two_sets(tmp_path: Path, device_dirs) -> tuple[Path, list[str], str, str]:
    src = make_tree(tmp_path / "src", seed=5, files=30, big=(6 << 20,))
    devs = [str(d) for d in device_dirs(2)]
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("-d", d)]
    first = run_cli("backup", str(src), *args, "--catalog", cat, "--json")
    assert first.code == 0, first.err
    kept = make_tree(tmp_path / "kept", seed=6, files=5)
    (src / "big0.bin").unlink()  # the second set no longer holds the big file
    assert run_cli("backup", str(src), str(kept), *args, "--catalog", cat).code == 0
    return src, devs, cat, first.json["set"]


@pytest.mark.slow
def test_forget_prune_is_refused_while_a_restore_reads_the_set_it_would_delete(
    tmp_path, device_dirs
):
    src, devs, cat, old_set = _two_sets(tmp_path, device_dirs)
    before = snapshot(src) | {"big0.bin": None}
    out = tmp_path / "out"
    slow = [a for d in devs for a in ("-d", f"{d}?limit=1M")]
    restore = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parbackup",
            "restore",
            "--set",
            old_set,
            "--target",
            str(out),
            *slow,
            "--catalog",
            cat,
        ],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    readers = Path(cat + ".readers")
    try:
        deadline = time.monotonic() + 120
        while not (readers.exists() and _locked_by(readers, restore.pid)):
            assert restore.poll() is None, restore.communicate()
            assert time.monotonic() < deadline, "the restore never took the readers' lock"
            time.sleep(0.01)  # polling a state the kernel shows, not waiting on a guess
        os.killpg(restore.pid, signal.SIGSTOP)  # certainly mid-read from here on
        r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat)
        assert r.code != 0 and "being read by a restore" in r.err, r.err + r.out
        sets = run_cli("sets", "--catalog", cat, "--json").json
        assert [s["status"] for s in sets["sets"]] == ["complete", "complete"]
        r = run_cli("prune", "--catalog", cat)
        assert r.code != 0 and "being read by a restore" in r.err, r.err + r.out
    finally:
        os.killpg(restore.pid, signal.SIGCONT)
    out_, err = restore.communicate(timeout=300)
    assert restore.returncode == 0, err.decode() + out_.decode()
    got = snapshot(restored_root(out, src))
    assert got.pop("big0.bin") is not None and got == {k: v for k, v in before.items() if v}

    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert not readers.read_bytes()  # the prune's pid is gone with its lock


def test_a_restore_and_a_verify_are_refused_while_a_prune_holds_the_catalog(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=7, files=10)
    devs = [str(d) for d in device_dirs(2)]
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("-d", d)]
    assert run_cli("backup", str(src), *args, "--catalog", cat).code == 0
    out = tmp_path / "out"
    with open_catalog(cat, create=False) as pruning:
        pruning.read_lock.exclusive()  # what a prune holds while it deletes
        r = run_cli("restore", "--target", str(out), "--catalog", cat)
        assert r.code != 0 and "is being pruned (pid" in r.err, r.err
        assert str(os.getpid()) in r.err and not out.exists()
        r = run_cli("verify", "--catalog", cat)
        assert r.code != 0 and "is being pruned" in r.err, r.err
        # a second prune is kept out by the run lock the first holds in earnest; the
        # readers' lock alone refuses it too
        r = run_cli("prune", "--catalog", cat)
        assert r.code != 0 and "being read" in r.err, r.err
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


@pytest.mark.slow  # a backup, a bind mount and a restore: 1.3-1.5 s
def test_a_catalog_on_read_only_media_restores_without_the_lock_file(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=8, files=10)
    devs = [str(d) for d in device_dirs(2)]
    home = tmp_path / "catalogs"
    home.mkdir()
    cat = str(home / "cat.sqlite")
    args = [a for d in devs for a in ("-d", d)]
    assert run_cli("backup", str(src), *args, "--catalog", cat).code == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(home), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        out = tmp_path / "out"
        r = run_cli("restore", "--target", str(out), "--catalog", str(ro / "cat.sqlite"))
        assert r.code == 0, r.err
        assert snapshot(restored_root(out, src)) == snapshot(src)
        assert not (ro / "cat.sqlite.readers").exists()
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.slow
def test_the_postgres_catalog_keeps_a_prune_and_a_restore_apart(pg_url, tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=9, files=8)
    devs = [str(d) for d in device_dirs(2)]
    args = [a for d in devs for a in ("-d", d)]
    assert run_cli("backup", str(src), *args, "--catalog", pg_url).code == 0
    out = tmp_path / "out"
    with open_catalog(pg_url, create=False) as pruning:
        pruning.read_lock.exclusive()
        r = run_cli("restore", "--target", str(out), "--catalog", pg_url)
        assert r.code != 0 and "is being pruned" in r.err, r.err
    with open_catalog(pg_url, create=False) as reading:
        reading.read_lock.share()
        r = run_cli("prune", "--catalog", pg_url)
        assert r.code != 0 and "being read by a restore" in r.err, r.err
        r = run_cli("verify", "--catalog", pg_url)  # readers share it
        assert r.code == 0, r.err
    assert run_cli("prune", "--catalog", pg_url).code == 0
    assert run_cli("restore", "--target", str(out), "--catalog", pg_url).code == 0
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_a_refused_prune_or_forget_leaves_no_lock_held_and_nothing_forgotten(
    tmp_path, device_dirs, monkeypatch
):
    """Review (session 9): a prune refused after it took the run lock drops it again,
    forget --prune refused forgets nothing, and a reader that named the catalog through
    a symlink or a relative path holds the lock of the same file (realpath)."""
    from parbackup.engine.forget import forget
    from parbackup.engine.recovery import prune_orphans
    from parbackup.errors import CatalogError
    from parbackup.plan.retention import Policy

    src, devs, cat, _ = _two_sets(tmp_path, device_dirs)
    os.symlink(cat, tmp_path / "alias.sqlite")
    monkeypatch.chdir(tmp_path)
    for name in (str(tmp_path / "alias.sqlite"), "cat.sqlite", "./alias.sqlite"):
        with (
            open_catalog(name, create=False) as reading,
            open_catalog(cat, create=False) as pruning,
        ):
            reading.read_lock.share()
            with pytest.raises(CatalogError, match="being read by a restore"):
                prune_orphans(pruning)
            assert not pruning.run_lock.held, "the refused prune dropped the run lock"
            with pytest.raises(CatalogError, match="being read by a restore"):
                forget(pruning, Policy(last=1), prune=True)
            assert not pruning.run_lock.held
            assert {s.status for s in pruning.sets()} == {"complete"}, "nothing forgotten"
            if name == "cat.sqlite":  # the run lock is free to another process: a backup
                # runs (one is enough: the name only changes the reader's lock, and
                # run_lock.held above is checked for every name)
                args = [a for d in devs for a in ("-d", d)]
                r = run_cli("backup", str(src), *args, "--catalog", cat)
                assert r.code == 0, r.err
    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat)
    assert r.code == 0, r.err


@pytest.mark.slow
def test_a_restore_killed_with_sigkill_leaves_no_readers_lock(tmp_path, device_dirs):
    """The kernel drops the shared lock of a restore killed with SIGKILL (its process
    alone, not its group: no helper of it keeps the lock file open), so the next prune
    runs."""
    _, devs, cat, old_set = _two_sets(tmp_path, device_dirs)
    slow = [a for d in devs for a in ("-d", f"{d}?limit=1M")]
    restore = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "restore", "--set", old_set,
         "--target", str(tmp_path / "out"), *slow, "--catalog", cat],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    readers = Path(cat + ".readers")
    try:
        deadline = time.monotonic() + 120
        while not (readers.exists() and _locked_by(readers, restore.pid)):
            assert restore.poll() is None, "the restore ended before it was killed"
            assert time.monotonic() < deadline, "the restore never took the readers' lock"
            time.sleep(0.01)  # polling a state the kernel shows, not waiting on a guess
        os.kill(restore.pid, signal.SIGKILL)
        restore.wait(timeout=60)
        r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
        assert r.code == 0, r.err
        assert [s["status"] for s in run_cli("sets", "--catalog", cat, "--json").json["sets"]][
            -1
        ] == "complete"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(restore.pid, signal.SIGKILL)


# Three commands each (1.1-1.7 s): the symlink, the case that could truncate a file of
# root's, runs in the quick subset; the FIFO and the directory in the whole suite.
@pytest.mark.parametrize(
    "planted",
    ["symlink", pytest.param("fifo", marks=pytest.mark.slow),
     pytest.param("directory", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_planted_readers_file_is_never_followed_or_waited_on(tmp_path, device_dirs, planted):
    """A ``.readers`` someone made a symlink (to a file root must not truncate), a FIFO
    or a directory: a verify runs without the lock (never through the symlink, never
    waiting on the FIFO), and a prune is refused rather than deleting unguarded."""
    src = make_tree(tmp_path / "src", seed=10, files=5)
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    cat = str(tmp_path / "cat.sqlite")
    assert run_cli("backup", str(src), *devs, "--catalog", cat).code == 0
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    readers = cat + ".readers"
    {"symlink": lambda: os.symlink(victim, readers), "fifo": lambda: os.mkfifo(readers),
     "directory": lambda: os.mkdir(readers)}[planted]()  # fmt: skip
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.err
    r = run_cli("prune", "--catalog", cat)
    assert r.code != 0 and "cannot lock the catalog" in r.err, r.err
    assert victim.read_bytes() == b"precious\n"
