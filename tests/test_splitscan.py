"""A large tree scanned by two processes (engine/splitscan.py): the same rows in the same
order as one process's scan, hard links rejoined across the two halves, a helper that
dies replaced by walking its half here, and no process at all for a small tree."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from parbackup.engine.splitscan import scan_tree
from parbackup.entries import FILE, HARDLINK, Entries
from parbackup.sources.base import SourceSpec
from parbackup.sources.local import LocalTree
from parbackup.workers import LocalExecutor, LocalWorker


def wide_tree(root: Path) -> Path:
    """Ten top-level directories with files, subdirectories, symlinks and attributes,
    and files with several names: across the two halves, inside one, and empty ones
    (whose attributes the scan reads)."""
    for d in range(10):
        top = root / f"t{d}"
        (top / "sub").mkdir(parents=True)
        for f in range(5):
            (top / f"f{f}").write_bytes(b"x" * (d * 10 + f))
            (top / "sub" / f"g{f}").write_bytes(b"y" * f)
        (top / "link").symlink_to(f"f{d % 5}")
        os.setxattr(top / "sub", "user.pb", f"sub{d}".encode())
    (root / "rootfile").write_bytes(b"r")
    os.link(root / "t0" / "f3", root / "t9" / "same")  # first name on this side
    os.link(root / "t8" / "f2", root / "t9" / "also")  # both names in the helper's half
    os.link(root / "t1" / "f1", root / "t7" / "sub" / "deep")
    (root / "t2" / "empty").write_bytes(b"")
    os.setxattr(root / "t2" / "empty", "user.pb", b"e")
    os.link(root / "t2" / "empty", root / "t6" / "empty2")  # its attributes go with it
    return root


def rows(entries: Entries) -> list[tuple]:
    return [
        (entries.path_bytes(i), entries.kind[i], entries.size[i], entries.mode[i],
         entries.mtime_ns[i], entries.ctime_ns[i], entries.ino[i], entries.dev[i],
         entries.uid[i], entries.link_bytes(i), entries.meta_bytes(i), entries.source[i])
        for i in range(len(entries))
    ]  # fmt: skip


def one_process(root: Path) -> tuple[list[tuple], list]:
    out, problems = Entries(), []
    out.append(b"/other", FILE, 1, 0o644, 0, 0, 1)  # another source before this one
    LocalTree(SourceSpec("tree", str(root), str(root))).scan(
        out, 1, lambda p, e: problems.append((p, e))
    )
    return rows(out), problems


class Counting(LocalExecutor):
    """The local executor, counting the helpers it starts; ``kill_first`` kills each
    one (SIGKILL) as soon as it runs, a helper that dies; ``let_finish`` returns only
    once the helper has sent everything and left, a helper faster than this process."""

    def __init__(self, kill_first: bool = False, let_finish: bool = False) -> None:
        self.started: list[LocalWorker] = []
        self.kill_first, self.let_finish = kill_first, let_finish

    def start(self, target, spec, name="", host=""):
        worker = super().start(target, spec, name, host)
        self.started.append(worker)
        if self.kill_first:
            os.kill(worker.proc.pid, signal.SIGKILL)
        if self.kill_first or self.let_finish:
            worker.proc.wait()
        return worker


FAILED = "scan helper failed"


def split(root: Path, executor: LocalExecutor, split_at: int) -> tuple[list[tuple], list]:
    out, problems = Entries(), []
    out.append(b"/other", FILE, 1, 0o644, 0, 0, 1)
    tree = LocalTree(SourceSpec("tree", str(root), str(root)))
    scan_tree(tree, out, 1, lambda p, e: problems.append((p, e)), executor, split_at)
    return rows(out), problems


@pytest.mark.parametrize("split_at", [1, 12, 40])
@pytest.mark.parametrize("let_finish", [False, True])
def test_two_processes_give_the_rows_of_one(tmp_path, caplog, split_at, let_finish) -> None:
    """Also when the helper is done before this process first looks (its last message
    read between this process's own directories, not lost)."""
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting(let_finish=let_finish)
    got, problems = split(root, executor, split_at)
    want, want_problems = one_process(root)
    assert len(executor.started) == 1  # the tree was shared out
    assert FAILED not in caplog.text  # its rows were used, not walked again here
    assert got == want
    assert problems == want_problems == []
    by_path = {r[0]: r for r in got}
    same = by_path[os.fsencode(root / "t9" / "same")]
    assert (same[1], same[9]) == (HARDLINK, os.fsencode(root / "t0" / "f3"))
    also = by_path[os.fsencode(root / "t9" / "also")]
    assert (also[1], also[9]) == (HARDLINK, os.fsencode(root / "t8" / "f2"))
    empty2 = by_path[os.fsencode(root / "t6" / "empty2")]
    assert (empty2[1], empty2[10]) == (HARDLINK, b"")  # a link's attributes: its file's


def test_a_helper_that_dies_leaves_its_half_to_this_process(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting(kill_first=True)
    got, problems = split(root, executor, 1)
    assert len(executor.started) == 1
    assert FAILED in caplog.text
    assert (got, problems) == one_process(root)


def test_a_small_tree_starts_no_process(tmp_path: Path) -> None:
    root = wide_tree(tmp_path / "src")
    executor = Counting()
    got, problems = split(root, executor, 10_000)
    assert executor.started == []
    assert (got, problems) == one_process(root)
