"""A large local tree scanned by two processes at once: here and in one helper.

The scan of a million small files is bound by its system calls (``fstatat`` and
``getdents``: about half its time) and by the interpreter around them; one process uses
one core. So a tree is scanned here until it proves large (``SPLIT_AT`` entries below
its root); then the top-level directories not yet walked are cut in two: this process
walks the first half, a helper process (a worker, parbackup/workers.py) the second, and
sends its entries back in parts of about ``PART`` rows. They are appended after this
process's own, so the table holds exactly the rows, in exactly the order, that one
process's scan gives (``LocalTree.scan_top`` / ``scan_under``), and a small tree starts
no process at all.

A file whose names lie on both sides is rejoined as one scan makes it: the first name
in scan order (this side's) stays the file, the later ones become hard links to it. If
the helper cannot be started or fails, its half is walked here: the scan never depends
on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from dataclasses import dataclass, field

from parbackup.engine.gcpause import paused_gc
from parbackup.entries import FILE, HARDLINK, Entries
from parbackup.sources.base import ErrorFunc, SourceSpec
from parbackup.sources.local import LocalTree, Top
from parbackup.workers import Channel, Executor, LocalExecutor, Worker

SPLIT_AT = 50_000
"""Entries scanned here before the rest of the tree is shared with a helper: below it,
starting an interpreter (about 0.1 s of CPU) costs more than it saves."""
PART = 20_000
"""Rows per message from the helper (about 1 MB): the helper never waits long for this
process, which reads them between its own directories."""
TARGET = "parbackup.engine.splitscan:scan_part"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanPart:
    """The helper's work: the directories ``tops`` of the tree ``spec``, below them."""

    spec: SourceSpec
    tops: list[Top]


@dataclass
class PartDone:
    """The helper's last message: the problems it met (path, why), in scan order, and
    the files with several names it saw (device, inode)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    linked: list[tuple[int, int]] = field(default_factory=list)


def scan_part(part: ScanPart, channel: Channel) -> None:
    """The helper (a worker): walk ``part.tops`` and send the entries in parts of about
    ``PART`` rows (``Entries``, paths after the tree's root), then ``PartDone``."""
    tree = LocalTree(part.spec)
    done = PartDone()
    on_error = lambda p, e: done.skipped.append((p, e))  # noqa: E731
    out = Entries()
    with paused_gc():  # rows are tuples: no cycles to look for
        for top in part.tops:
            tree.scan_under(out, 0, on_error, [top])
            if len(out) >= PART:
                channel.send(out)
                out = Entries()
    if len(out):
        channel.send(out)
    done.linked = list(tree.first_names)
    channel.send(done)


def scan_tree(
    tree: LocalTree,
    out: Entries,
    index: int,
    on_error: ErrorFunc,
    executor: Executor | None = None,
    split_at: int = SPLIT_AT,
) -> None:
    """``tree.scan(out, index, on_error)``, in two processes once the tree proves large
    (module docstring). ``split_at``: entries below the root before it is shared."""
    tops = tree.scan_top(out, index, on_error)
    start, k = len(out), 0
    helper: Worker | None = None
    theirs: list[Top] = []
    parts: list[Entries] = []
    end: PartDone | bool | None = None  # the helper's last word: done, failed, not yet
    try:
        while k < len(tops):
            tree.scan_under(out, index, on_error, [tops[k]])
            k += 1
            if len(out) - start >= split_at and len(tops) - k >= 2 and not theirs:
                half = k + (len(tops) - k) // 2
                theirs = tops[half:]
                helper = _start(executor or LocalExecutor(), tree.spec, theirs)
                if helper is None:  # walked here after all
                    split_at = len(out) + len(tops)
                    theirs = []
                else:
                    tops = tops[:half]
            if helper is not None and end is None:
                end = _take(helper, parts, block=False)
        if helper is None:
            return
        if end is None:
            end = _take(helper, parts, block=True)
        if end:
            helper.join(1.0)  # it leaves once its last message is out
    finally:
        if helper is not None:
            helper.kill()
    if not isinstance(end, PartDone):  # the helper failed: its half is walked here
        log.debug("scan helper failed: %d directories walked here instead", len(theirs))
        tree.scan_under(out, index, on_error, theirs)
        return
    done = end
    linked = set(done.linked)
    parts.reverse()
    while parts:  # each part freed once appended, and its memory given back
        _append(tree, out, index, parts.pop(), linked)
        _give_back()
    for path, why in done.skipped:
        on_error(path, why)


def _start(executor: Executor, spec: SourceSpec, tops: list[Top]) -> Worker | None:
    """The helper walking ``tops``; None when it cannot be started."""
    try:
        return executor.start(TARGET, ScanPart(spec, tops), name="scan")
    except OSError:
        return None


def _take(helper: Worker, parts: list[Entries], block: bool) -> PartDone | bool | None:
    """Read the helper's parts into ``parts``: what is there (``block`` False), or up to
    its end. Its ``PartDone`` once it came; False when it failed (ended without one, or
    crashed); None while it is still working (only when not ``block``)."""
    channel = helper.channel
    try:
        while block or channel.poll(0):
            msg = channel.recv()
            if isinstance(msg, Entries):
                parts.append(msg)
            elif isinstance(msg, PartDone):
                return msg
            else:  # Crashed, or anything unexpected: the half is walked here
                return False
    except (EOFError, OSError):
        return False
    return None


def _append(tree: LocalTree, out: Entries, index: int, part: Entries, linked: set) -> None:
    """Append the helper's ``part``; a file it saw first under a name that came later
    in scan order than one seen here becomes a hard link to that name."""
    first = out.extend_table(part, index)
    firsts = tree.first_names
    shared = linked & firsts.keys()  # seen on both sides: this side's name came first
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
