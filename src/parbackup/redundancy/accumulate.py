"""Rows of parity summed while the columns arrive (parity while writing).

Each column's units come in stream order, but the columns run at their own pace: row r
is complete once every column has given its unit r or has ended before it (past its
end a column is zeros and adds nothing, redundancy/layout.py). Complete rows leave in
row order (``ready``).

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
from collections.abc import Iterator
from dataclasses import dataclass

from parbackup.redundancy.isal import Updater, address
from parbackup.redundancy.volume import WRITTEN_VERSION, unit_digest


@dataclass
class _Row:
    buffer: bytearray | None
    """m units back to back; None while the row lies in the spill file."""
    base: int
    digests: list[bytes | None]
    fresh: bool = False
    """Its buffer holds nothing yet (not zeroed: the first unit is written, not added)."""


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
        self.spilled_rows = 0
        self.zero_digest = unit_digest(bytes(self.unit), WRITTEN_VERSION)

    # -- units in ---------------------------------------------------------------------
    def add(self, column: int, row: int, data: int, digest: bytes) -> None:
        """Add column ``column``'s unit ``row`` (at address ``data``; its digest)."""
        if row != self.got[column] or self.ended[column]:
            raise ValueError(f"column {column}: unit {row} out of order")
        entry = self.rows.get(row)
        if entry is None:
            entry = self.rows[row] = self._new_row(row)
        m, unit = self.m, self.unit
        if entry.fresh:
            self.updater.put(column, data, [entry.base + i * unit for i in range(m)])
            entry.fresh = False
        elif entry.buffer is not None:
            self.updater.add(column, data, [entry.base + i * unit for i in range(m)])
        else:  # in the spill file: read, add, write back
            buf, base = self._scratch()
            self._pread(buf, row)
            self.updater.add(column, data, [base + i * unit for i in range(m)])
            os.pwrite(self.spill, buf, row * m * unit)
        entry.digests[column] = digest
        self.got[column] += 1

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
            if entry.buffer is None:
                entry.buffer, entry.base = self._take()
                self._pread(entry.buffer, row)
            digests = [d if d is not None else self.zero_digest for d in entry.digests]
            with memoryview(entry.buffer) as view:
                yield row, view, digests
            self.pool.append((entry.buffer, entry.base))
            self.next_out += 1

    def drop(self) -> None:
        """Let every row being summed go (the stream is given up)."""
        for entry in self.rows.values():
            if entry.buffer is not None:
                self.pool.append((entry.buffer, entry.base))
        self.rows.clear()
        self.close()

    def close(self) -> None:
        """Let the spill file go; never raises."""
        if self.spill >= 0:
            with contextlib.suppress(OSError):
                os.close(self.spill)
            self.spill = -1

    # -- memory and spill -------------------------------------------------------------
    def _new_row(self, row: int) -> _Row:
        digests: list[bytes | None] = [None] * self.k
        if row < self.next_out + self.window:
            buf, base = self._take(zeroed=False)  # its first unit is written whole
            return _Row(buf, base, digests, fresh=True)
        if self.spill < 0:
            fd, path = tempfile.mkstemp(prefix="parbackup-parity-", dir=self.spill_dir)
            os.unlink(path)
            self.spill = fd
        self.spilled_rows += 1
        return _Row(None, 0, digests)

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
