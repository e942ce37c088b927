"""A large tree scanned by two processes (engine/splitscan.py): the same rows in the same
order as one process's scan, hard links rejoined across the two halves, a helper that
dies replaced by walking its half here, and no process at all for a small tree."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from parbackup.engine.splitscan import RECHECK, scan_tree, spare_cores
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
    """The local executor, counting the helpers it starts and the parts each was given.
    ``ready_first``: ``start`` returns only once the helper has said it is ready (a
    helper faster than this process); ``kill_at_work``: the helper is killed (SIGKILL)
    right after its first part of work is sent, a helper that dies holding a part;
    ``stop_at_work``: it is stopped there instead (SIGSTOP), a helper that never answers."""

    def __init__(
        self, ready_first: bool = False, kill_at_work: bool = False, stop_at_work: bool = False
    ) -> None:
        self.started: list[Parts] = []
        self.ready_first = ready_first
        self.at_work = signal.SIGKILL if kill_at_work else signal.SIGSTOP if stop_at_work else None

    def start(self, target, spec, name="", host=""):
        worker = Parts(super().start(target, spec, name, host), self.at_work)
        self.started.append(worker)
        if self.ready_first:
            assert worker.channel.poll(60)
        return worker


class Parts:
    """A helper as ``scan_tree`` sees it, counting the parts of work sent to it."""

    def __init__(self, worker: LocalWorker, at_work: signal.Signals | None) -> None:
        self.worker, self.at_work = worker, at_work
        self.channel = worker.channel
        self.parts: list[list] = []

    def send(self, msg) -> None:
        self.worker.send(msg)
        if msg:
            self.parts.append(msg)
            if self.at_work == signal.SIGKILL:
                os.kill(self.worker.proc.pid, signal.SIGKILL)
                self.worker.proc.wait()
            elif self.at_work == signal.SIGSTOP:
                os.kill(self.worker.proc.pid, signal.SIGSTOP)
                os.waitpid(self.worker.proc.pid, os.WUNTRACED)  # it is stopped now

    def kill(self) -> None:
        self.worker.kill()


FAILED = "scan helper failed"


def split(
    root: Path, executor: LocalExecutor, split_at: int, spare=lambda: True, **kw
) -> tuple[list[tuple], list]:
    """The split scan; ``spare`` says whether a core is idle (by default: one is, so
    these tests do not depend on the machine's load)."""
    out, problems = Entries(), []
    out.append(b"/other", FILE, 1, 0o644, 0, 0, 1)
    tree = LocalTree(SourceSpec("tree", str(root), str(root)))
    scan_tree(tree, out, 1, lambda p, e: problems.append((p, e)), executor, split_at, spare, **kw)
    return rows(out), problems


@pytest.mark.parametrize("split_at", [1, 12, 40])
@pytest.mark.parametrize("ready_first", [False, True])
def test_two_processes_give_the_rows_of_one(tmp_path, caplog, split_at, ready_first) -> None:
    """Also when the helper is ready before this process first looks (its first
    message read between this process's own directories, not lost)."""
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting(ready_first=ready_first)
    got, problems = split(root, executor, split_at)
    want, want_problems = one_process(root)
    assert len(executor.started) == 1  # the tree was shared out
    if ready_first:
        assert executor.started[0].parts  # and the helper got work
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


def deep_tree(root: Path) -> Path:
    """One top-level directory holding nearly everything, four levels deep (as a
    site-packages does), with files of several names across its branches, an
    unreadable directory, and a second small top-level directory after it."""
    for a in range(4):
        for b in range(4):
            for c in range(3):
                leaf = root / "big" / f"a{a}" / f"b{b}" / f"c{c}"
                leaf.mkdir(parents=True)
                for f in range(4):
                    (leaf / f"f{f}").write_bytes(b"z" * (a + b + c + f))
    (root / "small").mkdir()
    (root / "small" / "s").write_bytes(b"s")
    os.link(root / "big/a0/b0/c0/f1", root / "big/a3/b3/c2/x")  # first name early
    os.link(root / "big/a3/b3/c2/f2", root / "big/a1/b2/c1/y")  # first name in the middle
    os.link(root / "big/a3/b3/c2/f2", root / "small/z")  # and a third name after both
    os.link(root / "big/a2/b1/c0/f3", root / "big/a2/b1/c2/w")  # both names close
    locked = root / "big" / "a2" / "b0" / "locked"
    locked.mkdir()
    (locked / "hidden").write_bytes(b"h")
    locked.chmod(0)
    return root


@pytest.mark.parametrize("split_at", [1, 30, 120])
def test_a_deep_tree_is_shared_below_its_top_level_in_many_parts(tmp_path, split_at) -> None:
    """The parts are cut from the pending directories at every depth (not only the
    top-level ones, of which this tree has two), the helper takes part after part, and
    the rows, hard links and problems are those of one process's scan. (As root the
    locked directory is read like any other: the problems are then none, on both sides.)"""
    root = deep_tree(tmp_path / "src")
    try:
        executor = Counting(ready_first=True)
        got, problems = split(root, executor, split_at)
        want, want_problems = one_process(root)
    finally:
        (root / "big" / "a2" / "b0" / "locked").chmod(0o755)
    assert len(executor.started) == 1
    parts = executor.started[0].parts
    assert parts, "the helper was given work"
    assert any(len(top[0]) > len(os.fsencode(root / "big")) for part in parts for top in part)
    assert got == want
    assert problems == want_problems
    by_path = {r[0]: r for r in got}
    y = by_path[os.fsencode(root / "big/a1/b2/c1/y")]
    assert (y[1], y[2]) == (FILE, 3 + 3 + 2 + 2)  # the first name of three in scan order
    for later in ("big/a3/b3/c2/f2", "small/z"):
        row = by_path[os.fsencode(root / later)]
        assert (row[1], row[9]) == (HARDLINK, os.fsencode(root / "big/a1/b2/c1/y"))


def test_a_helper_that_dies_leaves_its_parts_to_this_process(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting(ready_first=True, kill_at_work=True)
    got, problems = split(root, executor, 1)
    assert len(executor.started) == 1
    assert executor.started[0].parts
    assert FAILED in caplog.text
    assert (got, problems) == one_process(root)


def test_a_helper_stopped_for_ever_leaves_its_parts_to_this_process(tmp_path, caplog) -> None:
    """A helper that stops answering (SIGSTOP, a frozen cgroup) while it holds a part
    held the scan, and so the backup, for ever: this process waited for the part's rows
    with no limit. Now it gives the helper up after ``quiet`` seconds of silence, kills
    it and walks its parts here. (The helper is stopped before ``quiet`` starts to
    count, so how short it is changes nothing the test sees: 0.2 s, not 1.)"""
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting(ready_first=True, stop_at_work=True)
    got, problems = split(root, executor, 1, quiet=0.2)
    assert executor.started[0].parts
    assert FAILED in caplog.text
    assert (got, problems) == one_process(root)
    executor.started[0].worker.proc.wait()  # killed (SIGKILL ends a stopped process)


def test_a_small_tree_starts_no_process(tmp_path: Path) -> None:
    root = wide_tree(tmp_path / "src")
    executor = Counting()
    got, problems = split(root, executor, 10_000)
    assert executor.started == []
    assert (got, problems) == one_process(root)


def test_no_spare_core_starts_no_process(tmp_path: Path, caplog) -> None:
    """With every core busy the helper would only add CPU: the tree is walked here."""
    caplog.set_level(logging.DEBUG, logger="parbackup.engine.splitscan")
    root = wide_tree(tmp_path / "src")
    executor = Counting()
    asked: list[int] = []
    got, problems = split(root, executor, 12, spare=lambda: asked.append(1) and False)
    assert executor.started == []
    assert len(asked) > 1  # asked again as the walk went on
    assert caplog.text.count("no idle core") == 1  # said once, for -vv
    assert (got, problems) == one_process(root)


def test_the_helper_starts_once_a_core_is_spare(tmp_path: Path) -> None:
    """Busy at first, then a core idles: the helper starts later in the walk and the
    rows are still those of one process's scan."""
    root = deep_tree(tmp_path / "src")
    answers = iter([False, False, False])
    executor = Counting(ready_first=True)
    try:
        got, problems = split(root, executor, 2 * RECHECK, spare=lambda: next(answers, True))
        want, want_problems = one_process(root)
    finally:
        (root / "big" / "a2" / "b0" / "locked").chmod(0o755)
    assert next(answers, None) is None  # every "busy" was heard before it started
    assert len(executor.started) == 1
    assert executor.started[0].parts
    assert (got, problems) == (want, want_problems)


@pytest.mark.parametrize(
    ("loadavg", "cores", "spare"),
    [
        ("0.52 0.58 0.59 1/467 12345\n", 2, 1),  # only the reader runs
        ("1.90 1.20 0.80 2/467 12345\n", 2, 0),  # and one other task
        ("9.10 8.70 6.00 12/210 19010\n", 2, -10),
        ("0.00 0.01 0.05 1/90 77\n", 1, 0),  # one core: never spare
    ],
)
def test_spare_cores_counts_the_runnable_tasks_against_the_cores(loadavg, cores, spare) -> None:
    assert spare_cores(loadavg, cores) == spare
