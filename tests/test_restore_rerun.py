"""A restore killed with SIGKILL, run again, gives the whole tree without ``--overwrite``.

A real restore process is killed at several moments: while its readers read (the
``faulty+`` device pauses after a seeded number of bytes and says so through a FIFO),
and, through ``strace --inject``, as the restoring process itself enters a given system
call (its readers, other processes, are not traced): the first and the last file it
renames into place (empty files, then the file split over both devices), the hard link
it makes, the first symlink, the first directory whose mode it sets, the first extended
attribute (the very last phase). Each time the same restore is run again, without
``--overwrite``, into the same target: it must exit 0 and leave a tree equal to the
source in bytes and metadata (modes, owners, times, symlinks, hard links, a FIFO,
extended attributes), with nothing of parbackup's own left (no ``.part``, no mark), and
an unrelated file in the target untouched. Before, the second run refused the files the
killed one had put in place ("already exist in the target (use --overwrite)").
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli
from killpoints import pause_point, wait_paused

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STRACE = shutil.which("strace")


def odd_tree(root: Path) -> Path:
    """Files (one large enough to be split over two devices), odd modes, a read-only
    directory, symlinks, hard links, a FIFO and extended attributes."""
    make_tree(root, seed=23, files=30, big=(3_000_000,))
    (root / "locked").mkdir()
    (root / "locked" / "inside.txt").write_bytes(b"in a read-only directory\n")
    os.setxattr(root / "locked" / "inside.txt", "user.note", b"locked in")
    os.chmod(root / "locked", 0o555)
    os.link(root / "file1.bin", root / "hard-file1")
    os.mkfifo(root / "pipe", 0o640)
    os.setxattr(root / "file2.bin", "user.color", b"blue")
    os.setxattr(root / "big0.bin", "user.size", b"big")
    sub = next(p for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith("dir"))
    os.setxattr(sub, "user.dir", b"1")
    os.chmod(sub, 0o750)
    os.utime(root / "locked", ns=(10**18, 10**18))
    return root


def picture(root: Path) -> dict[str, tuple]:
    """Everything a restore must give back, per relative path; hard links by group."""
    out: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            attrs = tuple(
                sorted(
                    (a, os.getxattr(p, a, follow_symlinks=False))
                    for a in os.listxattr(p, follow_symlinks=False)
                )
            )
            common = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid, attrs)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (*common, os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                first = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else rel
                out[rel] = (*common, st.st_mtime_ns, Path(p).read_bytes(), first)
            else:
                out[rel] = (*common, st.st_mtime_ns)
    return out


def ours(target: Path) -> list[str]:
    """parbackup's own names left in the target: ``.part`` files and the restore mark."""
    return [str(p) for p in target.rglob(".parbackup-*")]


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """(source tree, catalog, [device a, device b]) after one backup onto two devices."""
    base = tmp_path_factory.mktemp("rerun")
    tree = odd_tree(base / "src")
    devs = [base / "a", base / "b"]
    for d in devs:
        d.mkdir()
    cat = str(base / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    return tree, cat, devs


def prepared_target(path: Path) -> Path:
    """A target holding one file that has nothing to do with the set."""
    path.mkdir()
    (path / "unrelated.txt").write_bytes(b"mine\n")
    os.utime(path / "unrelated.txt", ns=(1, 1))
    return path


def start_paused_restore(
    cat: str, device: Path, at: int, target: Path, gate: Path
) -> tuple[subprocess.Popen, Path]:
    """A restore from ``device`` whose reader pauses after ``at`` bytes at ``gate``; the
    process and the FIFO that tells when it paused."""
    fifo = pause_point(gate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "restore", "--target", str(target),
         "--catalog", cat, "-d", f"faulty+file://{device}?pause_read={at}&gate={gate}"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc, fifo


def kill_mid_read(cat: str, device: Path, at: int, target: Path, tmp: Path) -> None:
    """A restore whose reader of ``device`` pauses after ``at`` bytes, then SIGKILL."""
    proc, fifo = start_paused_restore(cat, device, at, target, tmp / f"gate-{at}")
    try:
        assert wait_paused(proc, fifo), proc.communicate()
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def wait_placed(target: Path, tree: Path, timeout: float = 120) -> str:
    """The name of one of the set's ``file*.bin`` a restore into ``target`` has put in
    place (under its final name: a file is renamed there only once whole), polled."""
    root = restored_root(target, tree)
    names = [p.relative_to(tree) for p in tree.rglob("file*.bin")]
    deadline = time.monotonic() + timeout
    while True:
        placed = [rel.name for rel in names if (root / rel).exists()]
        if placed:
            return placed[0]
        assert time.monotonic() < deadline, f"no file of the set put in place in {timeout} s"
        time.sleep(0.01)


def kill_at_syscall(cat: str, call: str, when: int, target: Path) -> None:
    """A restore SIGKILLed by the kernel as its own process enters ``call`` for the
    ``when``-th time (its readers are not traced; they die with it)."""
    proc = subprocess.run(
        [STRACE, "-qq", "-o", "/dev/null", "-e", f"trace={call}",
         "-e", f"inject={call}:signal=SIGKILL:when={when}",
         sys.executable, "-m", "parbackup", "restore", "--target", str(target), "--catalog", cat],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
    )  # fmt: skip
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.stderr.decode()


KILLS = [
    ("read", "a", 1),
    ("read", "b", 200_000),
    ("read", "a", 1_500_000),
    ("syscall", "renameat", 1),
    ("syscall", "renameat", 7),
    ("syscall", "linkat", 1),
    ("syscall", "symlinkat", 1),
    ("syscall", "fchmod", 8),
    ("syscall", "lsetxattr", 1),
]


@pytest.mark.parametrize(("how", "what", "at"), KILLS, ids=[f"{k}-{w}-{a}" for k, w, a in KILLS])
def test_a_killed_restore_run_again_gives_the_whole_tree(backed_up, tmp_path, how, what, at):
    tree, cat, devs = backed_up
    if how == "syscall" and not STRACE:
        pytest.skip("needs strace")
    target = prepared_target(tmp_path / "target")
    unrelated = picture(target)["unrelated.txt"]
    if how == "read":
        kill_mid_read(cat, devs[0 if what == "a" else 1], at, target, tmp_path)
    else:
        kill_at_syscall(cat, what, at, target)
    assert ours(target), "the killed restore left no mark"
    r = run_cli("restore", "--target", str(target), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert picture(restored_root(target, tree)) == picture(tree)
    assert ours(target) == []
    assert picture(target)["unrelated.txt"] == unrelated


def test_the_mark_lets_only_the_same_restore_write_again(backed_up, tmp_path):
    """Another set, another selection, or a restore while one runs, still meet the rule."""
    tree, cat, devs = backed_up
    target = prepared_target(tmp_path / "target")
    proc, fifo = start_paused_restore(cat, devs[1], 100_000, target, tmp_path / "gate-other")
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        # device a's reader reads on while b's is paused: killed once a file is in place
        # (which files are by the pause is a matter of timing: the selection below names
        # one that is)
        name = wait_placed(target, tree)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # another selection of the same set into that target: the files are refused
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--include", f"**/{name}")
    assert r.code == 1 and "already exist in the target" in r.out + r.err, r.out + r.err
    # a live restore holds the target: a second one stops at once, naming it
    gate = tmp_path / "gate-live"
    live, fifo = start_paused_restore(cat, devs[0], 1, target, gate)
    try:
        assert wait_paused(live, fifo), live.communicate()
        r = run_cli("restore", "--target", str(target), "--catalog", cat)
        assert r.code == 1 and f"another restore (pid {live.pid})" in r.out + r.err, r.out + r.err
        gate.touch()
        out, err = live.communicate(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate()
    assert live.returncode == 0, out.decode() + err.decode()
    assert picture(restored_root(target, tree)) == picture(tree)
    assert ours(target) == []
    # once whole, the mark is gone: running it again is refused like any restore
    r = run_cli("restore", "--target", str(target), "--catalog", cat)
    assert r.code == 1 and "already exist in the target" in r.out + r.err, r.out + r.err
