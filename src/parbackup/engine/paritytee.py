"""A mover's side of parity while writing: its column's units, forwarded as written.

With ``backup --parity m`` on local workers, every data mover hands each byte it writes
into the set's volumes to the parity collector (engine/paritystream.py) as well: the bytes
are the column's stream (redundancy/layout.py), cut into units of ``unit`` bytes in
stream order. A unit goes through shared memory: the tee copies it into one of a few
slots of a memfd both processes map, digests it (the row records keep every unit's
digest: XXH3-128 in version 3, redundancy/volume.py), and sends only (slot, row,
digest) over a Unix socket; the parity collector adds
the unit to its row's parity and gives the slot back. With every slot out, the mover
waits (back-pressure: memory stays bounded), telling the dispatcher it is alive.

Parity is never a reason for a data device to fail: when the link breaks (the parity
worker ended, or gave no slot back for ``patience`` seconds) the tee stops forwarding
and the backup's parity is written after the data instead (engine/parity.py).

Messages are raw bytes, not pickles (a message goes per write: a pickler set up for each
was a good part of the interpreter's time per unit at both ends; docs/BENCHMARKS.md,
session 12). Mover -> parity collector: the hello ``column token`` with the memfd, then
``b"u"`` followed by (slot, row, digest) of every unit the write completed
(``UNIT_ENTRY`` and the digest), and ``b"e"`` followed by the pickled ``[[volume, size],
...]`` at the end; parity collector -> mover: the numbers of slots that are free again
(``SLOT``, one or more).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from parbackup.devices.base import ForwardingWriter, ObjectWriter
from parbackup.redundancy.volume import WRITTEN_VERSION, unit_digest

_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
"""The slots' pages are made at once, not faulted in one by one at the first copy into
them (a thousand faults per mover, ~3 us each on this machine class: bench/parity.py)."""


@dataclass(frozen=True, slots=True)
class ParityLink:
    """Where a data mover sends its column (``Begin.parity``)."""

    address: str
    """The parity collector's Unix socket (abstract namespace: a leading NUL)."""
    token: str
    """Proves the connection comes from this run."""
    column: int
    unit: int
    slots: int = 8
    """Units in flight per mover (``slots_for``: 8 MiB of them, whatever the unit). The
    collector is a thread of the controller: it takes a unit only once it has the
    interpreter lock, which the dispatcher may hold for a switch interval (5 ms), while a
    mover fills a 1 MiB slot in about 1 ms. With 4 slots the three movers of
    bench/parity.py waited 0.6-0.8 s in all per 256 MiB for slots to come back; with 8,
    0.03-0.08 s (load average 10). Memory: 8 MiB per mover, shared."""
    patience: float = 60.0


UNIT_ENTRY = struct.Struct("<IQ")
"""A unit in a ``b"u"`` message: its slot and row; its digest follows."""
SLOT = struct.Struct("<I")
"""A slot given back: a message of the collector is one or more of them."""


def free_slots(data: bytes) -> list[int]:
    """The slot numbers of a collector's message."""
    return [s for (s,) in SLOT.iter_unpack(data)]


SLOT_BYTES = 8 << 20
"""Bytes in flight per mover (ParityLink.slots): 8 slots of the 1 MiB unit."""


def slots_for(unit: int) -> int:
    """A mover's slots for ``unit``: ``SLOT_BYTES`` of them, at least 2 (one filled by the
    mover while the collector sums the other), so a larger unit takes no more memory."""
    return max(2, SLOT_BYTES // unit)


def offered_max(slots: int) -> int:
    """A column's units left offered (in its mover's slots, encoded once their row is
    complete) before its oldest is settled (summed alone, its slot given back): half of
    its slots, so its mover has the other half to fill while the collector waits for
    the interpreter lock or for the other columns."""
    return max(1, slots // 2)


class ParityTee:
    """Forwards one column's stream to the parity collector (see the module docstring)."""

    def __init__(self, link: ParityLink, beat: Callable[[], None] = lambda: None) -> None:
        self.link, self.beat = link, beat
        self.unit = link.unit
        self.conn: Connection | None = None
        self.poller: select.poll | None = None
        self.map: mmap.mmap | None = None
        self.free: deque[int] = deque(range(link.slots))
        self.slot = -1
        self.fill = 0
        self.row = 0
        self.outgoing = bytearray(b"u")
        """The units shipped since the last message (sent at the end of a write, or
        before the tee waits for a slot)."""
        self.volumes: list[tuple[str, int]] = []
        self.broken = ""
        self.ended = False
        try:
            self._connect()
        except OSError as exc:
            self.fail(f"cannot reach the parity collector: {exc}")

    def _connect(self) -> None:
        link = self.link
        fd = os.memfd_create("parbackup-parity", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, link.slots * link.unit)
            self.map = mmap.mmap(fd, link.slots * link.unit, flags=_MAP_FLAGS)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(link.address)
                hello = f"{link.column} {link.token}".encode()
                socket.send_fds(sock, [len(hello).to_bytes(2, "little") + hello], [fd])
            except BaseException:
                sock.close()
                raise
            self.conn = Connection(sock.detach())
            self.poller = select.poll()
            self.poller.register(self.conn.fileno(), select.POLLIN)
        finally:
            os.close(fd)

    @property
    def active(self) -> bool:
        return not self.broken and not self.ended

    def wrap(self, name: str, writer: ObjectWriter) -> ObjectWriter:
        """A writer that forwards what it writes into volume ``name`` to the tee."""
        return _Teed(writer, self, name) if self.active else writer

    def fail(self, why: str) -> None:
        """Stop forwarding for good (the set's parity is then written afterwards)."""
        if not self.broken:
            self.broken = why or "stopped"
        self.close()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append stream bytes: copied into the current slot, shipped when it is full.
        Never raises: whatever goes wrong here only stops the forwarding."""
        try:
            self._feed(data)
        except Exception as exc:  # parity must never fail a data device
            self.fail(f"forwarding failed: {exc!r}")

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        unit = self.unit
        while view and self.active:
            if self.slot < 0 and not self._take_slot():
                return
            take = min(unit - self.fill, len(view))
            at = self.slot * unit + self.fill
            assert self.map is not None
            self.map[at : at + take] = view[:take]
            self.fill += take
            view = view[take:]
            if self.fill == unit:
                self._ship()
        self._flush()

    def volume_done(self, name: str, size: int) -> None:
        self.volumes.append((name, size))

    def end(self) -> None:
        """The column's stream is complete: ship the last (zero-padded) unit and the
        volumes it was written into. Never raises (as ``feed``)."""
        try:
            self._end()
        except Exception as exc:  # parity must never fail a data device
            self.fail(f"forwarding failed: {exc!r}")

    def _end(self) -> None:
        if not self.active:
            return
        if self.fill:
            self._ship()
        if not self._flush():  # the link broke
            return
        assert self.conn is not None
        try:
            self.conn.send_bytes(b"e" + pickle.dumps([[n, s] for n, s in self.volumes]))
        except (OSError, ValueError) as exc:
            self.fail(f"the parity collector went away: {exc}")
            return
        self.ended = True
        self.close()

    def close(self) -> None:
        """Let the link and the shared memory go; never raises."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        if self.map is not None:
            with contextlib.suppress(BufferError, ValueError):
                self.map.close()
            self.map = None

    def _ship(self) -> None:
        unit, slot = self.unit, self.slot
        assert self.map is not None
        if self.fill < unit:
            self.map[slot * unit + self.fill : (slot + 1) * unit] = bytes(unit - self.fill)
        with memoryview(self.map) as whole:
            digest = unit_digest(whole[slot * unit : (slot + 1) * unit], WRITTEN_VERSION)
        self.outgoing += UNIT_ENTRY.pack(slot, self.row)
        self.outgoing += digest
        self.row += 1
        self.slot, self.fill = -1, 0

    def _flush(self) -> bool:
        """Send the units shipped since the last message; False (and the tee broken)
        when the link broke."""
        if len(self.outgoing) > 1 and self.active:
            assert self.conn is not None
            try:
                self.conn.send_bytes(self.outgoing)
            except (OSError, ValueError) as exc:
                self.fail(f"the parity collector went away: {exc}")
                return False
            del self.outgoing[1:]
        return self.active

    def _take_slot(self) -> bool:
        """A free slot in ``self.slot``; False (and the tee broken) when none came back.
        The collector's messages are read only once no slot is left (until then they
        wait in the socket: one at most per slot out), and through a poll object made
        once: ``Connection.poll`` builds a selector at every call (~25 us, and it was
        called twice a unit; docs/BENCHMARKS.md, session 12)."""
        if not self.free and not self._refill():
            return False
        self.slot = self.free.popleft()
        return True

    def _refill(self) -> bool:
        conn, poller = self.conn, self.poller
        assert conn is not None and poller is not None
        if not self._flush():  # the collector needs the units shipped first
            return False
        deadline = time.monotonic() + self.link.patience
        try:
            while not self.free:
                wait = min(1.0, max(0.0, deadline - time.monotonic()))
                if not poller.poll(int(wait * 1000)):
                    if time.monotonic() >= deadline:
                        self.fail(f"the parity collector took no unit for {self.link.patience:g} s")
                        return False
                    self.beat()
                    continue
                self.free.extend(free_slots(conn.recv_bytes()))
            while poller.poll(0):  # others it gave back meanwhile
                self.free.extend(free_slots(conn.recv_bytes()))
        except (OSError, EOFError, ValueError) as exc:
            self.fail(f"the parity collector went away: {exc}")
            return False
        return True


class _Teed(ForwardingWriter):
    """A volume writer whose bytes go to the tee too."""

    def __init__(self, inner: ObjectWriter, tee: ParityTee, name: str) -> None:
        super().__init__(inner)
        self.tee, self.name, self.size = tee, name, 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)
        self.size += len(data)
        self.tee.feed(data)

    def commit(self) -> None:
        self.inner.commit()
        self.tee.volume_done(self.name, self.size)

    def abort(self) -> None:
        self.inner.abort()
        self.tee.fail("a volume was given up")
