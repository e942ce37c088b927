"""A decoded stand-in's rows decoded by a thread of their own, ahead of its reader.

A restore with a data device missing waited for one process: the reader of the
stand-in (devices/decoded.py) read k units for each unit it gave, decoded them, and only
then checked its records and wrote them out, while the other readers were done (on 2
cores, the stand-in's reader ran alone for the last third of the restore:
docs/BENCHMARKS.md, "session 13, degraded13 helper"). Here one thread per stripe reads
and decodes, the rows of the read at hand first, then as many rows past its end as it
spanned, while the reader's own thread checks and writes the span before: the two
overlap, since the reads, ISA-L (ctypes), BLAKE3 and the sink's writes all let go of
the interpreter lock. Only that thread touches the surviving devices, as one thread did
before.

A row of the read at hand that is not decoded yet is decoded straight into the reader's
buffer; a row decoded ahead waits in a buffer of its own (at most as many rows as the
read spanned, and never more than ``MAX_AHEAD`` bytes) and is copied in. A row the read
covers in part (a span's ends) is kept for the next read. Only a read that follows on
from the one before (a whole restore's spans) sets rows to decode ahead: a few files'
scattered records cost no decoding for nothing. An error decoding a row reaches the
reader when it reads that row, as it did when it decoded the row itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from parbackup.errors import DeviceError

MAX_AHEAD = 16 << 20
"""Bytes of rows decoded ahead at most (the reader's span, readback/reader.py)."""

Decode = Callable[[int, memoryview], None]
"""Writes row ``row``'s lost unit into a writable view of ``unit`` bytes (or raises)."""


class RowsAhead:
    """Decodes rows on a thread of its own; ``read`` gives them back in order."""

    def __init__(self, decode: Decode, unit: int, keep: int = 2) -> None:
        self.decode, self.unit, self.keep = decode, unit, keep
        self.cond = threading.Condition()
        self.queue: deque[tuple[int, memoryview | None]] = deque()
        """Rows to decode, in order, each into the reader's view or (None) a buffer."""
        self.done: dict[int, bytearray | BaseException | None] = {}
        """Decoded rows: a buffer of ours, None (into the view given), or the error."""
        self.busy: tuple[int, bool] | None = None
        """The row being decoded, and whether into a view of the reader's."""
        self.spare: list[bytearray] = []
        self.kept: OrderedDict[int, bytearray] = OrderedDict()
        """Rows a read covered in part: the next read (the reader's thread) wants them."""
        self.stop = False
        self.thread: threading.Thread | None = None

    def read(self, pieces: Sequence[tuple[int, int, int]], out: memoryview, ahead: range) -> None:
        """Fill ``out`` with the bytes [lo, hi) of each ``(row, lo, hi)`` of ``pieces``,
        back to back, then go on decoding the rows of ``ahead`` (none: nothing ahead)."""
        plan, at = [], 0
        for row, lo, hi in pieces:
            plan.append((row, lo, hi, out[at : at + hi - lo]))
            at += hi - lo
        wanted = {row for row, _lo, _hi, _t in plan}
        have = {row: self.kept.pop(row) for row in wanted if row in self.kept}
        ahead = range(ahead.start, min(ahead.stop, ahead.start + max(1, MAX_AHEAD // self.unit)))
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="rows-ahead", daemon=True)
                self.thread.start()
            for row in [r for r in self.done if r not in wanted and r not in ahead]:
                self._recycle(self.done.pop(row))
            self.queue.clear()
            busy = self.busy[0] if self.busy else None
            for row, lo, hi, target in plan:
                if row not in have and row not in self.done and row != busy:
                    self.queue.append((row, target if hi - lo == self.unit else None))
            for row in ahead:
                if row not in wanted and row not in self.kept and row not in self.done:
                    self.queue.extend([] if row == busy else [(row, None)])
            self.cond.notify_all()
        try:
            for row, lo, hi, target in plan:
                got = have.pop(row) if row in have else self._wait(row)
                if got is None:  # decoded into ``target``
                    continue
                target[:] = memoryview(got)[lo:hi]
                if hi - lo < self.unit:
                    self.kept[row] = got  # the next read wants the rest
                    while len(self.kept) > self.keep:
                        self._recycle(self.kept.popitem(last=False)[1])
                else:
                    self._recycle(got)
        finally:
            with self.cond:  # nothing may write into ``out`` once this returns
                self.queue = deque(q for q in self.queue if q[1] is None)
                while self.busy and self.busy[1]:
                    self.cond.wait()
                for row in wanted:
                    if row in self.done and self.done[row] is None:
                        del self.done[row]
                for got in have.values():
                    self._recycle(got)

    def _wait(self, row: int) -> bytearray | None:
        """Row ``row`` once decoded: a buffer of ours, or None (into the view given)."""
        with self.cond:
            while row not in self.done:
                if self.thread is None or not self.thread.is_alive():
                    raise DeviceError("the thread decoding a missing device's rows ended")
                self.cond.wait()
            got = self.done.pop(row)
        if isinstance(got, BaseException):
            raise got
        return got

    def _recycle(self, got: bytearray | BaseException | None) -> None:
        """A buffer of ours back to the spares (under ``cond``: the thread takes them)."""
        if isinstance(got, bytearray):
            with self.cond:
                self.spare.append(got)

    def _run(self) -> None:
        """The decoding thread: the queue's rows, one at a time, until ``close``."""
        while True:
            with self.cond:
                while not self.queue and not self.stop:
                    self.cond.wait()
                if self.stop:
                    return
                row, target = self.queue.popleft()
                self.busy = (row, target is not None)
                buf = None
                if target is None:
                    buf = self.spare.pop() if self.spare else bytearray(self.unit)
            got: bytearray | BaseException | None = buf
            try:
                self.decode(row, memoryview(buf) if target is None else target)
            except BaseException as exc:  # the reader's thread raises it, reading the row
                got = exc
                self._recycle(buf)
            with self.cond:
                self.done[row] = got
                self.busy = None
                self.cond.notify_all()

    def close(self) -> None:
        """Stop the thread (after the row it is decoding); the buffers go."""
        with self.cond:
            self.stop = True
            self.queue.clear()
            self.cond.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()
        self.done, self.kept, self.spare = {}, OrderedDict(), []
