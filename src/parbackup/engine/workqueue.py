"""A device's work as the dispatcher holds it, in columns: what is still to send, and
what was sent but is not yet durable.

``WorkQueue`` holds items not yet sent to the mover, in list order (W1). Work is sent
in batches from the front; pacing takes not-started work back from the end; a failed
device's queue is drained whole. ``Sent`` holds items sent and not yet durable, keyed
by their sequence number, so that a failure knows what to redo and the window knows
how much is in flight. Both keep three arrays, not an object per item: a million small
files cost megabytes, not hundreds of them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from itertools import accumulate
from operator import itemgetter
from typing import Any

from parbackup.model import Piece

Columns = tuple[array, array, array]
"""Items as three columns: file ids, offsets, sizes (``array('q')`` each)."""


class WorkQueue:
    """Items not yet sent, in list order; ``bytes`` is their total size.

    A chunk is ``[file, offset, size, rows, at, end]``: its items are ``rows[at:end]``,
    rows into the three columns. The columns may be a whole plan's, shared by every
    device's queue (each device owns its rows), so queueing a plan of a million items
    costs one small array of rows per device, not a copy of the plan.
    """

    def __init__(self) -> None:
        self.chunks: deque[list] = deque()
        self.bytes = 0
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def extend(
        self,
        file: Sequence[int],
        offset: Sequence[int],
        size: Sequence[int],
        rows: Sequence[int] | None = None,
    ) -> None:
        """Queue items after those already queued: ``rows`` of the columns (default all
        of them). Arrays are shared, not copied, and this queue writes item offsets and
        sizes in them (a split): pass arrays nobody else changes. Anything else is copied.
        """
        cols = [c if isinstance(c, array) else array("q", c) for c in (file, offset, size)]
        rows = range(len(cols[0])) if rows is None else rows
        if len(rows):
            self.chunks.append([*cols, rows, 0, len(rows)])
            self.bytes += sum(cols[2][r] for r in rows)
            self.count += len(rows)

    def take(self, max_items: int, max_bytes: int, split: int) -> list[tuple[int, int, int]]:
        """``take_columns``' items as (file, offset, size) tuples."""
        return list(zip(*self.take_columns(max_items, max_bytes, split), strict=True))

    def take_columns(self, max_items: int, max_bytes: int, split: int) -> Columns:
        """Up to ``max_items`` items (at most ``max_bytes`` unless the first is larger)
        from the front, as three columns (file, offset, size); an item larger than
        ``split`` goes in ``split``-byte parts, the rest staying at the front (so its
        unread tail can still move elsewhere)."""
        out: Columns = (array("q"), array("q"), array("q"))
        files, offsets, sizes = out
        nbytes = 0
        while self.chunks and len(files) < max_items and (nbytes < max_bytes or not files):
            chunk = self.chunks[0]
            file, offset, size, rows, at, end = chunk
            taken = _whole_run(chunk, max_items - len(files), max_bytes, nbytes, out, split)
            if taken is not None:
                nbytes += taken
                self.bytes -= taken
                self.count -= chunk[4] - at
                if chunk[4] == end:
                    self.chunks.popleft()
                continue
            r = rows[at]
            fid, off, sz = file[r], offset[r], size[r]
            files.append(fid)
            offsets.append(off)
            if sz > split:
                sizes.append(split)
                offset[r], size[r] = off + split, sz - split
                nbytes += split
                self.bytes -= split
                continue
            sizes.append(sz)
            nbytes += sz
            self.bytes -= sz
            self.count -= 1
            chunk[4] = at + 1
            if chunk[4] == end:
                self.chunks.popleft()
        return out

    def take_back(self, nbytes: int, min_cut: int) -> list[Piece]:
        """Up to ``nbytes`` of work from the end: whole items first, then the front of
        the last one stays and its tail is cut (cuts under ``min_cut`` are not made)."""
        out: list[Piece] = []
        while self.chunks and nbytes > 0:
            chunk = self.chunks[-1]
            file, offset, size, rows, at, end = chunk
            r = rows[end - 1]
            fid, off, sz = file[r], offset[r], size[r]
            if sz <= nbytes:
                out.append(Piece(fid, off, sz))
                nbytes -= sz
                self.bytes -= sz
                self.count -= 1
                chunk[5] = end - 1
                if chunk[5] == at:
                    self.chunks.pop()
                continue
            if nbytes >= min_cut:
                size[r] = sz - nbytes
                out.append(Piece(fid, off + sz - nbytes, nbytes))
                self.bytes -= nbytes
            break
        return out

    def drain(self) -> list[Piece]:
        """Everything still queued (a failed device's work)."""
        out = [
            Piece(file[r], offset[r], size[r])
            for file, offset, size, rows, at, end in self.chunks
            for r in rows[at:end]
        ]
        self.chunks.clear()
        self.bytes = self.count = 0
        return out


def _whole_run(
    chunk: list, most: int, max_bytes: int, nbytes: int, out: Columns, split: int
) -> int | None:
    """``WorkQueue.take_columns``' items from the front of ``chunk`` while none is to be
    split, taken as a run (``itemgetter``, ``accumulate`` and ``bisect``: no Python per item,
    a million small files) onto the ends of ``out``'s columns; their bytes. Consumes them
    from ``chunk``; None when the first item is to be split (the caller splits it) or
    none may be taken."""
    file, offset, size, rows, at, end = chunk
    rs = rows[at : at + min(most, end - at)]
    get = rows_of(rs) if len(rs) else None
    sizes = array("q", get(size) if get else ())
    if sizes and max(sizes) > split:  # a large file ends the run (rare: one loop)
        sizes = sizes[: next(j for j, n in enumerate(sizes) if n > split)]
    before = list(accumulate(sizes, initial=nbytes))  # bytes taken before each item
    count = bisect_left(before, max_bytes, 0, len(sizes))
    if count == 0 and not out[0] and sizes:
        count = 1  # the first item goes even when larger than max_bytes
    if count == 0:
        return None
    if count < len(rs):
        get = rows_of(rs[:count])
    chunk[4] = at + count
    out[0].extend(get(file))  # type: ignore[misc]
    out[1].extend(get(offset))  # type: ignore[misc]
    out[2].extend(sizes[:count])
    return before[count] - nbytes


class Sent:
    """Items sent to a mover and not yet durable, by sequence number."""

    def __init__(self) -> None:
        self.first = 1  # sequence number of the oldest item held
        self.file, self.offset, self.size = array("q"), array("q"), array("q")
        self.start = 0  # index of ``first`` in the arrays
        self.done = 0  # highest sequence number fully written
        self.undone_bytes = 0  # bytes sent and not yet written

    @property
    def next_seq(self) -> int:
        return self.first + len(self.file) - self.start

    def add_columns(
        self, files: Sequence[int], offsets: Sequence[int], sizes: Sequence[int]
    ) -> int:
        """Record sent items given as three columns (no Python per item); the sequence
        number of the first."""
        first = self.next_seq
        self.file.extend(files)
        self.offset.extend(offsets)
        self.size.extend(sizes)
        self.undone_bytes += sum(sizes)
        return first

    def mark_done(self, upto: int) -> None:
        """Items up to ``upto`` are written (maybe not yet durable)."""
        if upto <= self.done:
            return
        lo = max(self.done, self.first - 1) + 1
        at = self.start - self.first
        self.undone_bytes -= sum(self.size[at + lo : at + upto + 1])
        self.done = upto

    def retire(self, upto: int) -> None:
        """Items up to ``upto`` are durable: forget them."""
        self.mark_done(upto)
        drop = min(upto - self.first + 1, len(self.file) - self.start)
        if drop <= 0:
            return
        self.start += drop
        self.first += drop
        if self.start > 4096 and self.start * 2 > len(self.file):
            for col in (self.file, self.offset, self.size):
                del col[: self.start]
            self.start = 0

    @property
    def undone(self) -> int:
        """Items sent and not yet written."""
        return self.next_seq - 1 - self.done

    def pieces(self) -> list[Piece]:
        """Every item held (sent and not durable)."""
        return [
            Piece(f, o, s)
            for f, o, s in zip(
                self.file[self.start :],
                self.offset[self.start :],
                self.size[self.start :],
                strict=True,
            )
        ]

    def __len__(self) -> int:
        return len(self.file) - self.start


def rows_of(keys: Sequence) -> Callable[[Any], tuple]:
    """``rows(column)``: the column's values at ``keys``, as a tuple (itemgetter: one C
    loop, faster than ``map(column.__getitem__, ...)`` or a comprehension)."""
    get = itemgetter(*keys)
    if len(keys) == 1:  # one key: itemgetter gives the value itself
        return lambda column: (get(column),)
    return get


def gather(values: array, rows: Callable[[Any], tuple]) -> array:
    """The values of ``rows`` as an array of the same type."""
    return array(values.typecode, rows(values))


class Uniform:
    """``column(name, values, rows, n)``: the ``n`` values of ``rows`` as ``gather``
    gives them, made by repeating the value when every row of ``values`` holds the same
    one (one owner, one file system, one source: most trees), which is found once per
    column and length (a comparison of whole arrays, ~3 ms a million rows), not per item.

    Only for columns that entries.py appends to and never writes in place (uid, gid,
    dev, source): the same array object of the same length still holds what it held."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[array, int, array | None]] = {}

    def column(self, name: str, values: array, rows: Callable[[Any], tuple], n: int) -> array:
        got = self.known.get(name)
        if got is None or got[0] is not values or got[1] != len(values):
            one = values[:1]
            got = (values, len(values), one if one * len(values) == values else None)
            self.known[name] = got
        one = got[2]
        return gather(values, rows) if one is None else one * n
