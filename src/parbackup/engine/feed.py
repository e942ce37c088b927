"""Feeding a stream of unknown length (standard input) to the dispatcher (F2, W3).

The stream is cut into ``segment``-byte pieces as it arrives; each goes to the device
that is least filled at that moment among those with room (P5), with its bytes, so all
devices are written at once while the stream is read. At most ``buffers`` segments are
held in memory (default: one per device, plus one): a segment is let go once its device
has made it durable (the mover checkpoints after every stream segment). A device that
cannot make part of a volume durable (a tape) has its segments let go once written; if
it then fails, those bytes are lost and the stream is reported damaged, never stored
silently as good.

The stream's size is known only at its end: every record header carries as file size
the end of its own segment (a lower bound), and the catalog gets the true size when the
stream ends. When a device fails, the segments it had not made durable are written
again on the others (R2); its durable records stay where they are.
"""

from __future__ import annotations

from parbackup.engine.dispatch import DeviceState, Dispatcher
from parbackup.errors import BackupFailedError
from parbackup.model import Piece
from parbackup.sources.base import FileReader

SEGMENT = 8 << 20
"""Bytes of the stream per segment (one item of one device)."""


class StreamFeed:
    """Reads the stream into segments and assigns them as the dispatcher runs."""

    def __init__(self, reader: FileReader, segment: int = SEGMENT, buffers: int = 0) -> None:
        self.reader, self.segment, self.buffers = reader, segment, buffers
        self.held: dict[int, bytearray] = {}  # offset -> bytes not yet durable
        self.owner: dict[int, tuple[int, int]] = {}  # offset -> (device, seq)
        self.total = 0
        self.ended = False
        self.lost_bytes = 0
        self.lost_with = ""

    def step(self, dispatcher: Dispatcher) -> None:
        """Read and assign segments while there is buffer room."""
        limit = self.buffers or len(dispatcher.devices) + 1
        while not self.ended and len(self.held) < limit:
            buf = bytearray(self.segment)
            n = self.reader.readinto(self.total, memoryview(buf))
            if n == 0 and self.total > 0:
                self.ended = True
                return
            if n < self.segment:
                del buf[n:]  # the last segment: shrink in place, no copy
            self.place(dispatcher, Piece(0, self.total, n), buf)
            self.total += n
            if n < self.segment:
                self.ended = True

    def place(self, dispatcher: Dispatcher, piece: Piece, data: bytearray) -> DeviceState:
        """Give one segment to the least-filled live device with room for it (P5)."""
        fits = [
            d
            for d in dispatcher.alive
            if d.space.free is None or d.space.free - d.assigned - (1 << 20) >= piece.size
        ]
        if not fits:
            raise BackupFailedError("no device has room left for the rest of the stream")
        dev = min(fits, key=lambda d: (d.assigned, d.index))
        self.held[piece.offset] = data
        dev.queue.extend([0], [piece.offset], [piece.size])
        dev.assigned += piece.size
        dev.report.segments += 1  # type: ignore[union-attr]
        return dev

    def data_for(self, dev: DeviceState, seq: int, offset: int) -> bytearray:
        """The bytes of the segment at ``offset``, now sent to ``dev`` as item ``seq``."""
        self.owner[offset] = (dev.index, seq)
        return self.held[offset]

    def durable(self, dev: DeviceState, upto: int) -> None:
        """The device made its segments up to ``upto`` durable: let them go."""
        self._release(dev, upto)

    def written(self, dev: DeviceState, upto: int) -> None:
        """A device that cannot checkpoint wrote its segments up to ``upto``: let them
        go all the same (memory stays bounded), at the risk noted in ``lost``."""
        self._release(dev, upto)

    def _release(self, dev: DeviceState, upto: int) -> None:
        for offset, (index, seq) in list(self.owner.items()):
            if index == dev.index and seq <= upto:
                del self.owner[offset]
                del self.held[offset]

    def fail(self, dispatcher: Dispatcher, dev: DeviceState, pieces: list[Piece]) -> None:
        """A device failed: its segments still held go to the others (least filled
        first); those already let go are lost, and said so."""
        report = dev.report
        assert report is not None
        for p in sorted(pieces, key=lambda p: p.offset):
            if p.offset not in self.held:
                self.lost_bytes += p.size
                self.lost_with = dev.url
                continue
            self.owner.pop(p.offset, None)
            if not dispatcher.alive:
                continue
            to = self.place(dispatcher, p, self.held[p.offset])
            report.redirected[to.url] = report.redirected.get(to.url, 0) + p.size
