"""A large local tree scanned by two processes at once: here and in one helper.

The scan of a million small files is bound by its system calls (``fstatat`` and
``getdents``: about half its time) and by the interpreter around them; one process uses
one core. So a tree is scanned here until it proves large (``SPLIT_AT`` entries below
its root); then, as soon as a core is idle (``spare_core``: the helper only adds CPU
where it has no core of its own), a helper process (a worker, parbackup/workers.py;
in a backup or a plan a fork of the movers' server, engine/movers.py ``scan_helpers``) is
started, and whenever it is idle it takes the end of what this process has still to
walk: half of the directories pending on this process's depth-first stack, from the
bottom (the last in scan order, at any depth, not only the top-level ones: one large
top-level directory is shared too). It sends the entries of each part back in messages
of about ``PART`` rows. Each part is the rows of one stretch of the scan order: the
parts given later lie before those given earlier, all after this process's own rows, so
the table holds exactly the rows, in exactly the order, that one process's scan gives
(``LocalTree.scan_top`` / ``scan_under``), and a small tree starts no process at all.

A file whose names lie in several parts is rejoined as one scan makes it: the first
name in scan order stays the file, the later ones become hard links to it. If the
helper cannot be started or fails, its parts are walked here: the scan never depends
on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from parbackup.engine.gcpause import paused_gc
from parbackup.entries import FILE, HARDLINK, Entries
from parbackup.forkserver import ForkServerExecutor
from parbackup.sources.base import ErrorFunc, SourceSpec
from parbackup.sources.local import LocalTree, Top
from parbackup.workers import Channel, Executor, LocalExecutor, Worker

SPLIT_AT = 20_000
"""Entries scanned here before the rest of the tree is shared with a helper: below it,
starting an interpreter (about 0.1 s of CPU) costs more than it saves. (It was 50,000
while only top-level directories could be shared: the helper started that late and
got little; at 20,000 this process has walked about 0.12 s on a quiet machine, and
the helper, ready 0.1 s later, still finds the rest of a 60k-entry tree to share.) A
backup's helper is a fork of a warm server (2 ms of CPU, ready in 6 ms, where the
interpreter took 49 ms and 97 ms: docs/BENCHMARKS.md, "The scan helper forked"); what a
split still costs is its rows, pickled there and merged here, which grow as the
threshold falls, so it stays."""
RECHECK = 4
"""Once ``split_at`` entries were walked and no core was spare, the question is asked
again after every further ``split_at // RECHECK`` entries (a read of /proc/loadavg)."""
PART = 20_000
"""Rows per message from the helper (about 1 MB): the helper never waits long for this
process, which reads them between its own directories."""
QUIET = 120.0
"""Seconds the helper may stay silent while this process waits for a part it holds:
then it is given up (killed, its parts walked here). A helper stopped (SIGSTOP, a frozen
cgroup) held the backup for ever; a healthy one sends rows every ``PART`` entries."""
TARGET = "parbackup.engine.splitscan:scan_part"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanPart:
    """The helper's work: the directories ``tops`` of the tree ``spec``, below them;
    more parts follow as ``list[Top]`` messages, ``None`` when there are no more."""

    spec: SourceSpec
    tops: list[Top]


@dataclass
class PartDone:
    """The helper's last message of a part: the problems it met (path, why), in scan
    order, and the files with several names it saw there ((device, inode) -> the path
    of the first)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    linked: dict[tuple[int, int], bytes] = field(default_factory=dict)


def scan_part(part: ScanPart, channel: Channel) -> None:
    """The helper (a worker): walk each part's tops and send the entries in parts of
    about ``PART`` rows (``Entries``, paths after the tree's root), then ``PartDone``;
    then wait for the next part (it is killed when there are no more; ``None``: leave).
    The first part may be empty: its ``PartDone`` says the helper is ready."""
    tree = LocalTree(part.spec)
    tops: list[Top] | None = part.tops
    while tops is not None:
        done = PartDone()
        on_error = lambda p, e, skipped=done.skipped: skipped.append((p, e))  # noqa: E731
        tree.first_names = {}  # each part is rejoined on its own: parts come back in
        out = Entries()  # another order than they were walked here
        with paused_gc():  # rows are tuples: no cycles to look for
            for top in tops:
                tree.scan_under(out, 0, on_error, [top])
                if len(out) >= PART:
                    channel.send(out)
                    out = Entries()
        if len(out):
            channel.send(out)
        done.linked = dict(tree.first_names)
        channel.send(done)
        tops = channel.recv()


@dataclass
class _Share:
    """The parts of a tree given to the helper, and what came back of them."""

    helper: Worker
    given: list[list[Top]] = field(default_factory=lambda: [[]])
    """The tops of each part, in the order given (the first, empty: "ready?")."""
    rows: list[list[Entries]] = field(default_factory=lambda: [[]])
    done: list[PartDone] = field(default_factory=list)
    failed: bool = False

    @property
    def idle(self) -> bool:
        """Every part given is done: the helper waits for the next."""
        return len(self.done) == len(self.given) and not self.failed

    def take(self, block: bool, quiet: float = QUIET) -> None:
        """Read what the helper sent: what is there, or (``block``) up to its last part;
        a helper silent for ``quiet`` seconds while it owes a part has failed."""
        channel = self.helper.channel
        try:
            while not self.failed:
                if not channel.poll(0):
                    if not block or self.idle:
                        return
                    if not channel.poll(quiet):
                        self.failed = True
                        return
                msg = channel.recv()
                if isinstance(msg, Entries):
                    self.rows[len(self.done)].append(msg)
                elif isinstance(msg, PartDone):
                    self.done.append(msg)
                else:  # Crashed, or anything unexpected: its parts are walked here
                    self.failed = True
        except (EOFError, OSError):
            self.failed = True

    def give(self, pending: list[Top]) -> None:
        """The end of this process's ``pending`` directories (the last part of the scan
        order: see ``LocalTree.scan_under``) to the helper."""
        k = max(1, len(pending) // 2)
        tops = pending[:k]
        del pending[:k]
        tops.reverse()  # in scan order
        self.given.append(tops)
        self.rows.append([])
        self.helper.send(tops)


def scan_tree(
    tree: LocalTree,
    out: Entries,
    index: int,
    on_error: ErrorFunc,
    executor: Executor | None = None,
    split_at: int | None = None,
    spare: Callable[[], bool] | None = None,
    quiet: float = QUIET,
) -> None:
    """``tree.scan(out, index, on_error)``, in two processes once the tree proves large
    (module docstring). ``split_at``: entries below the root before it is shared
    (``SPLIT_AT``).

    The helper is started once ``split_at`` entries were walked here and ``spare()``
    (default ``spare_core``) says a core is idle for it, asked again every ``split_at //
    RECHECK`` entries until it is; whenever the helper is idle (at first: once it is
    ready) it is given the end of what this process has still to walk, so the two share
    the rest as it comes; one silent for ``quiet`` seconds while it owes a part is given
    up (``QUIET``). Each part comes back as the rows of one stretch of the scan
    order: the parts given later lie before those given earlier, all of them after this
    process's own rows."""
    split_at = SPLIT_AT if split_at is None else split_at
    tops = tree.scan_top(out, index, on_error)
    start = len(out)
    share: _Share | None = None
    tried = False
    ask_at = start + split_at  # when to ask next whether a core is spare
    warm_at = start + split_at // 2 if isinstance(executor, ForkServerExecutor) else None
    spare = spare or spare_core

    def between(pending: list[Top], walked: int) -> None:
        nonlocal share, tried, ask_at, warm_at
        if share is None:
            if warm_at is not None and walked >= warm_at:  # a cold server (``plan``)
                warm_at = None  # gets ready beside the walk, not while it waits
                assert isinstance(executor, ForkServerExecutor)
                executor.warm()
            if not tried and walked >= ask_at and len(pending) >= 2:
                if not spare():  # no idle core: the helper would only add CPU
                    if ask_at == start + split_at:
                        log.debug("scan helper: no idle core at %d entries", walked - start)
                    ask_at = walked + max(1, split_at // RECHECK)
                    return
                tried = True  # one helper at most: walked here if it cannot start
                helper = _start(executor or LocalExecutor(), tree.spec)
                share = _Share(helper) if helper is not None else None
            return
        share.take(block=False)
        if share.idle and len(pending) >= 2:
            share.give(pending)

    try:
        tree.scan_under(out, index, on_error, tops, between)
        if share is None:
            return
        if all(not tops for tops in share.given):  # it never got work: not waited for
            return
        share.take(block=True, quiet=quiet)  # then it is killed: there are no more parts
    finally:
        if share is not None:
            share.helper.kill()
    if share.failed:  # its parts are walked here, in scan order
        log.debug("scan helper failed: %d parts walked here instead", len(share.given) - 1)
        for part in reversed(share.given):
            tree.scan_under(out, index, on_error, part)
        return
    log.debug(
        "scan helper: %d parts, %d of %d rows",
        len(share.given) - 1,
        sum(len(p) for rows in share.rows for p in rows),
        len(out) - start + sum(len(p) for rows in share.rows for p in rows),
    )
    firsts = tree.first_names
    for rows, done in reversed(list(zip(share.rows, share.done, strict=True))):
        while rows:  # each part freed once appended, and its memory given back
            _append(out, index, rows.pop(0), firsts, done.linked)
            _give_back()
        for key, first in done.linked.items():
            firsts.setdefault(key, first)
        for path, why in done.skipped:
            on_error(path, why)


def spare_cores(loadavg: str, cores: int) -> int:
    """Cores idle now: ``cores`` less the runnable tasks of ``loadavg`` (the text of
    /proc/loadavg, whose fourth field is "runnable/total"; the runnable count includes
    the process that reads it)."""
    runnable = int(loadavg.split()[3].split("/")[0])
    return cores - runnable


def spare_core() -> bool:
    """Whether a core is idle now for a scan helper (True where it cannot be told).

    The helper saves this process about half of the rest of the walk (wall time) at the
    price of more CPU in all (its start, its rows pickled and merged here: measured in
    docs/BENCHMARKS.md, "The split scan: where it pays"). Only a core nobody else wants
    turns that CPU into a shorter run; on a busy machine (the movers' start-up, other
    work) the helper takes it from them."""
    try:
        cores = len(os.sched_getaffinity(0))
        with open("/proc/loadavg", encoding="ascii") as fh:
            return spare_cores(fh.read(), cores) >= 1
    except (OSError, AttributeError, ValueError, IndexError):
        return True


def _start(executor: Executor, spec: SourceSpec) -> Worker | None:
    """The helper, with an empty first part (it says when it is ready); None when it
    cannot be started."""
    try:
        return executor.start(TARGET, ScanPart(spec, []), name="scan")
    except OSError:
        return None


def _append(
    out: Entries, index: int, part: Entries, firsts: dict, linked: dict[tuple[int, int], bytes]
) -> None:
    """Append one of the helper's ``part``s; a file it saw first under a name that comes
    later in scan order than one already in ``out`` (``firsts``: (device, inode) -> the
    first name) becomes a hard link to that name."""
    first = out.extend_table(part, index)
    shared = linked.keys() & firsts.keys()  # seen before: the earlier name is the file
    if not shared:
        return
    kind, dev, ino = out.kind, out.dev, out.ino
    for i in range(first, len(out)):
        if kind[i] in (FILE, HARDLINK) and (key := (dev[i], ino[i])) in shared:
            out.make_hardlink(i, firsts[key])


def _give_back() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; nothing where
    there is none): the parts are small blocks on the heap, the table's columns large
    ones that grow elsewhere, so without it the freed parts would stay resident."""
    with contextlib.suppress(OSError, AttributeError):
        _LIBC.malloc_trim(0)


try:
    _LIBC = ctypes.CDLL(None)
except OSError:  # pragma: no cover - no C library to ask
    _LIBC = None
