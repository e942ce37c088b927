"""Rows of parity summed while the columns arrive (parity while writing).

Each column's units come in stream order, but the columns run at their own pace: row r
is complete once every column has given its unit r or has ended before it (past its
end a column is zeros and adds nothing, redundancy/layout.py). Complete rows leave in
row order (``ready``).

A unit may be summed at once (``add``), or offered (``offer``): left where the caller
holds it (a mover's shared slot, engine/paritystream.py) until its row is complete,
then the whole row is encoded in one ISA-L call, each data unit read once and each
parity unit written once, where summing unit by unit reads and writes the parity units
once per column (2.6x the time for k=3, m=1). The caller gets each offered unit's
token back in ``released`` once its bytes are no longer needed, and may ``settle`` an
offered unit early (summed into its row now) when it needs the unit's memory back.

Memory: a row being summed holds m units. At most ``window`` rows past the oldest
unfinished one are kept in memory; a unit for a row further ahead (a fast device far
ahead of a slow one, as with ``--balance time``) is summed into a spill file instead
(unlinked at once, sparse, in ``spill_dir``) and read back when its row is complete. So
memory stays at ``window * m`` units whatever the devices' speeds, and no device waits
for another. (The parity collector asks ``fits`` first and holds such a unit for a
while, its mover waiting, before it lets it spill: engine/paritystream.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from parbackup.fileio import write_all
from parbackup.redundancy.isal import Updater, address
from parbackup.redundancy.volume import WRITTEN_VERSION, unit_digest


@dataclass
class _Row:
    buffer: bytearray | None
    """m units back to back; None while nothing is summed yet or the row is spilled."""
    base: int
    digests: list[bytes | None]
    spilled: bool = False
    """Its sum lies in the spill file."""
    pending: list[tuple[int, int, object]] = field(default_factory=list)
    """(column, address, token) of the units offered and not summed yet."""


class RowAccumulator:
    """Sums the units of k columns into rows of m parity units (see the module docstring)."""

    def __init__(self, updater: Updater, *, window: int = 32, spill_dir: str | None = None) -> None:
        self.updater = updater
        self.k, self.m, self.unit = updater.k, updater.m, updater.unit
        self.window = max(1, window)
        self.spill_dir = spill_dir
        self.got = [0] * self.k
        self.ended = [False] * self.k
        self.rows: dict[int, _Row] = {}
        self.next_out = 0
        self.pool: list[tuple[bytearray, int]] = []
        self.spill: int = -1
        self.scratch: tuple[bytearray, int] | None = None
        self.zeros: tuple[bytearray, int] | None = None
        self.spilled_rows = 0
        self.whole_rows = 0
        """Rows encoded in one call from offered units only."""
        self.zero_digest = unit_digest(bytes(self.unit), WRITTEN_VERSION)
        self.waiting: list[deque[int]] = [deque() for _ in range(self.k)]
        """Each column's rows with an offered unit not summed yet, oldest first."""
        self.released: list[object] = []
        """Tokens of offered units no longer needed, for the caller to take."""

    # -- units in ---------------------------------------------------------------------
    def add(self, column: int, row: int, data: int, digest: bytes) -> None:
        """Add column ``column``'s unit ``row`` (at address ``data``; its digest)."""
        self._sum(self._entry(column, row, digest), row, column, data)

    def offer(self, column: int, row: int, data: int, digest: bytes, token: object) -> None:
        """Column ``column``'s unit ``row`` (at address ``data``; its digest), read only
        when its row is complete (``ready``) or it is settled: its bytes must stay there
        until ``token`` is in ``released``."""
        self._entry(column, row, digest).pending.append((column, data, token))
        self.waiting[column].append(row)

    def settle(self, column: int) -> None:
        """Sum column ``column``'s oldest offered unit into its row now (in memory when
        the row ``fits``, else in the spill file); its token is released."""
        row = self.waiting[column].popleft()
        entry = self.rows[row]
        at = next(i for i, (c, _data, _token) in enumerate(entry.pending) if c == column)
        _column, data, token = entry.pending.pop(at)
        self._sum(entry, row, column, data)
        self.released.append(token)

    def fits(self, row: int) -> bool:
        """True when a unit of row ``row`` would be summed in memory (no spill): the row
        lies within the window past the oldest unfinished one."""
        return row < self.next_out + self.window

    def end(self, column: int) -> None:
        """Column ``column`` has no more units."""
        self.ended[column] = True

    @property
    def rows_total(self) -> int:
        """Rows so far (the longest column's units)."""
        return max(self.got, default=0)

    @property
    def finished(self) -> bool:
        """Every column ended and every row left."""
        return all(self.ended) and self.next_out >= self.rows_total

    # -- rows out ---------------------------------------------------------------------
    def ready(self) -> Iterator[tuple[int, memoryview, list[bytes]]]:
        """The complete rows, in order: (row, its m parity units back to back, the
        digests of its k data units). The view is valid until the next iteration."""
        while self.next_out < self.rows_total and all(
            g > self.next_out or e for g, e in zip(self.got, self.ended, strict=True)
        ):
            row = self.next_out
            entry = self.rows.pop(row)
            if entry.spilled:
                entry.buffer, entry.base = self._take()
                self._pread(entry.buffer, row)
            if entry.pending:
                self._encode(row, entry)
            assert entry.buffer is not None
            digests = [d if d is not None else self.zero_digest for d in entry.digests]
            with memoryview(entry.buffer) as view:
                yield row, view, digests
            self.pool.append((entry.buffer, entry.base))
            self.next_out += 1

    def _encode(self, row: int, entry: _Row) -> None:
        """Sum the offered units of complete row ``row``: the whole row in one call when
        none of it is summed yet, else each unit added; their tokens are released."""
        m, unit = self.m, self.unit
        if entry.buffer is None:
            entry.buffer, entry.base = self._take(zeroed=False)  # written whole
            data = [self._zeros()] * self.k  # a column past its end: zeros
            for column, address_, _token in entry.pending:
                data[column] = address_
            self.updater.encode(data, [entry.base + i * unit for i in range(m)])
            self.whole_rows += 1
        else:
            for column, address_, _token in entry.pending:
                self.updater.add(column, address_, [entry.base + i * unit for i in range(m)])
        for column, _address, token in entry.pending:
            if self.waiting[column].popleft() != row:
                raise ValueError(f"column {column}: offered units out of order")
            self.released.append(token)
        entry.pending.clear()

    def drop(self) -> None:
        """Let every row being summed go (the stream is given up); every offered unit's
        token is released."""
        for entry in self.rows.values():
            if entry.buffer is not None:
                self.pool.append((entry.buffer, entry.base))
            self.released.extend(token for _column, _data, token in entry.pending)
        self.rows.clear()
        for waiting in self.waiting:
            waiting.clear()
        self.close()

    def close(self) -> None:
        """Let the spill file go; never raises."""
        if self.spill >= 0:
            with contextlib.suppress(OSError):
                os.close(self.spill)
            self.spill = -1

    # -- memory and spill -------------------------------------------------------------
    def _entry(self, column: int, row: int, digest: bytes) -> _Row:
        """Row ``row``'s entry, with column ``column``'s unit counted in."""
        if row != self.got[column] or self.ended[column]:
            raise ValueError(f"column {column}: unit {row} out of order")
        entry = self.rows.get(row)
        if entry is None:
            entry = self.rows[row] = _Row(None, 0, [None] * self.k)
        entry.digests[column] = digest
        self.got[column] += 1
        return entry

    def _sum(self, entry: _Row, row: int, column: int, data: int) -> None:
        """Add the unit at ``data`` to row ``row``'s sum: the row's first unit is written
        into a buffer taken then (no zeroing first) when the row fits in the window, else
        the row goes to the spill file (read, add, write back)."""
        m, unit = self.m, self.unit
        if entry.buffer is None and not entry.spilled:
            if self.fits(row):
                entry.buffer, entry.base = self._take(zeroed=False)
                self.updater.put(column, data, [entry.base + i * unit for i in range(m)])
                return
            if self.spill < 0:
                fd, path = tempfile.mkstemp(prefix="parbackup-parity-", dir=self.spill_dir)
                os.unlink(path)
                self.spill = fd
            self.spilled_rows += 1
            entry.spilled = True
        if entry.buffer is not None:
            self.updater.add(column, data, [entry.base + i * unit for i in range(m)])
        else:  # in the spill file: read, add, write back
            buf, base = self._scratch()
            self._pread(buf, row)
            self.updater.add(column, data, [base + i * unit for i in range(m)])
            write_all(self.spill, buf, row * m * unit)  # a short write: ENOSPC, not a cut sum

    def _zeros(self) -> int:
        """The address of a unit of zeros (a column past its end, in a whole row)."""
        if self.zeros is None:
            buf = bytearray(self.unit)
            self.zeros = (buf, address(buf))
        return self.zeros[1]

    def _take(self, zeroed: bool = True) -> tuple[bytearray, int]:
        """A buffer of m units (zeroed unless ``zeroed`` is False) and its address."""
        if self.pool:
            buf, base = self.pool.pop()
            if zeroed:
                ctypes.memset(base, 0, len(buf))
            return buf, base
        buf = bytearray(self.m * self.unit)
        return buf, address(buf)

    def _scratch(self) -> tuple[bytearray, int]:
        if self.scratch is None:
            buf = bytearray(self.m * self.unit)
            self.scratch = (buf, address(buf))
        return self.scratch

    def _pread(self, buf: bytearray, row: int) -> None:
        """Row ``row``'s sum from the spill file into ``buf`` (zeros where never written)."""
        size = len(buf)
        with memoryview(buf) as view:
            done = 0
            while done < size:
                got = os.preadv(self.spill, [view[done:]], row * size + done)
                if got <= 0:
                    view[done:] = bytes(size - done)
                    return
                done += got
