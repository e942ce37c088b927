"""The parity collector: parity volumes written while the data devices are.

``collect(spec, channel)`` runs on a thread of the backup's own process (``Collector``),
beside the dispatcher. It opens and labels the parity devices, then takes every data
mover's column unit by unit (engine/paritytee.py: shared memory, a Unix socket), leaves
each unit in its slot until every column has passed its row, then encodes the row whole
with ISA-L (redundancy/isal.py, accumulate.py), writes it to the parity volumes
(redundancy/streamed.py) and gives the row's slots back. The messages of the moment
are all taken in before any unit is offered (``drain`` once per wakeup), so a row the
other columns complete in the same wakeup is still encoded whole. The volumes are of
version 3 (redundancy/volume.py): the rows and the columns' volumes go into the end
record.

Why a thread, not a worker process of its own: its heavy work (ISA-L's update, the unit digests,
device writes) runs without the interpreter lock, so a thread takes no core from the
movers, and it spares a second interpreter's start (~0.1 s of CPU) and its memory
(~35 MB; bench/parity.py). It talks to the controller through a pipe, with messages as
a worker would (``channel``), so it could move into a worker process unchanged.

Conversation (controller -> collector, then what the collector answers):

    (start)                       -> Opened(labels, schemes) | Failed
    Begin(set, columns, created)  -> Listening(address, token) | Failed
    Close()                       -> Written(volumes, columns, rows) | Failed
    Put(files)                    -> Stored(errors)     the catalog copy, once Written
    Abandon()                     -> (the collector gives up what it did not commit, ends)

A column running ahead of the others would keep every slot of its mover: once more than
half of its slots wait, its oldest unit is settled (added alone to its row's sum in
memory, ISA-L's update, and its slot given back; ``offered_max``). A unit of a row too
far ahead of the oldest unfinished one is not settled but held: its slot stays with the
collector, so the mover runs out of slots and waits, and its core goes to the columns
behind (on a busy machine one mover is often starved for a while). Spilling it instead
(redundancy/accumulate.py) costs a write and two reads of the row per unit;
bench/parity.py measured up to 130 of 170 rows spilled without the hold. A column held
for ``hold`` seconds without catching up (a device that is really faster, as with
``--balance time``) spills from then on until it is back within the window; after
``_HOLDS`` such timeouts it is never held again.

``Close`` comes once every data device committed: the collector waits for every column's
end, writes the end records and commits. A column whose link breaks before its end
(its device failed, its mover was killed) makes the streamed parity useless: the collector
then answers Close with Failed, and the controller writes the parity after the data
instead (engine/parity.py).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import pickle
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from blake3 import blake3

from parbackup.engine.devices import close_all, open_devices
from parbackup.engine.paritymsg import (
    Abandon,
    Begin,
    Close,
    Failed,
    Listening,
    Opened,
    Put,
    Stored,
    Written,
)
from parbackup.engine.paritytee import SLOT, UNIT_ENTRY, offered_max
from parbackup.errors import ParbackupError, UsageError
from parbackup.redundancy.codec import fragment_headers
from parbackup.redundancy.isal import address
from parbackup.redundancy.streamed import StreamedParity
from parbackup.redundancy.volume import WRITTEN_VERSION, digest_size
from parbackup.workers import Channel

log = logging.getLogger(__name__)

_HELLO_TIMEOUT = 10.0
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
_HOLDS = 3
"""Hold timeouts after which a column always spills (it really is faster)."""
_DIGEST = digest_size(WRITTEN_VERSION)
"""Bytes of a unit digest in a tee's message."""
_BAD_MESSAGE = (ValueError, TypeError, IndexError, struct.error, pickle.UnpicklingError)
WINDOW_BYTES = 16 << 20
"""Parity units summed in memory ahead, per parity device (ParitySpec.window): 16 rows
of the 1 MiB unit."""


def window_for(unit: int) -> int:
    """The rows of ``unit`` held in memory past the oldest unfinished one: ``WINDOW_BYTES``
    of them, at least 4, so a larger unit takes no more memory."""
    return max(4, WINDOW_BYTES // unit)


@dataclass(frozen=True, slots=True)
class ParitySpec:
    urls: tuple[str, ...]
    unit: int
    window: int = 16
    """Rows summed in memory past the oldest unfinished one (``window_for``)."""
    timeout: float = 60.0
    hold: float = 0.5
    """Seconds a column running ahead is held (its mover waits) before it spills."""
    columns: int = 0
    """Data columns the set is expected to have (0: not known): their codec fragment
    headers are computed while the sources are scanned, not once ``Begin`` came, when
    every mover waits for the collector's address."""


@dataclass
class _Column:
    conn: Connection
    map: mmap.mmap
    base: int
    volumes: tuple[tuple[str, int], ...] = ()
    ended: bool = False
    """Nothing more comes from its link (its end came, or it broke)."""
    held: deque = field(default_factory=deque)
    """(slot, row, digest) of units not summed yet, in stream order."""
    end_volumes: list | None = None
    """The column's end, once it came (given to the parity after its held units)."""
    end_given: bool = False
    held_since: float = 0.0
    """When its first held unit stopped fitting (0: not waiting)."""
    spilling: bool = False
    timeouts: int = 0
    freed: list[int] = field(default_factory=list)
    """Slots summed (or let go) and not given back yet: one message gives them all."""


@dataclass
class _Collector:
    spec: ParitySpec
    channel: Channel
    opened: list = field(default_factory=list)
    parity: StreamedParity | None = None
    columns: dict[int, _Column] = field(default_factory=dict)
    broken: str = ""
    closing: bool = False
    fragments: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """The codec fragment headers of a row, by k, computed ahead (``prepare``)."""

    def prepare(self) -> None:
        """Compute the fragment headers of the expected k while nothing waits for them
        (pyeclib encodes a row of zeros: ~20 ms, which ``begin`` would add to the time
        every mover waits before it writes its first byte)."""
        k, m = self.spec.columns, len(self.opened)
        if k and m:
            with contextlib.suppress(ParbackupError):  # begin computes them (and says why)
                self.fragments[k] = tuple(fragment_headers(k, m, self.spec.unit))

    def begin(self, msg: Begin) -> tuple[socket.socket, str]:
        k, unit = len(msg.columns), self.spec.unit
        labels = tuple(d.label.label for d in self.opened)
        if set(labels) & set(msg.columns):
            raise UsageError("a parity device is also a data device of the set")
        self.k = k
        self.parity = StreamedParity(
            msg.set_id,
            msg.columns,
            [(d.label.label, d.device) for d in self.opened],
            unit,
            created_ns=msg.created_ns,
            window=self.spec.window,
            fragments=self.fragments.get(k),
        )
        self.token = os.urandom(16).hex()
        address = f"\0parbackup-parity-{os.getpid()}-{os.urandom(8).hex()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(k)
        listener.setblocking(False)  # ``accept`` takes every link waiting, then returns
        return listener, address

    def accept(self, listener: socket.socket) -> None:
        """Take every mover's link waiting to be taken (``link``). All of them, not one
        a wakeup: a mover connects before its first unit, so once every mover committed
        (``Close``) every link is here or taken, and Close judges the columns after
        this (small columns end before a starved collector took their links)."""
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.link(sock)

    def link(self, sock: socket.socket) -> None:
        """Take a mover's hello: its column and the memfd of its slots."""
        fds: list[int] = []
        try:
            sock.settimeout(_HELLO_TIMEOUT)
            msg, fds, _flags, _addr = socket.recv_fds(sock, 512, 1)
            sock.settimeout(None)
            text = msg[2 : 2 + int.from_bytes(msg[:2], "little")].decode()
            column, token = text.split(" ", 1)
            j = int(column)
            known = _digest(token) == _digest(self.token)  # in constant time (of the token)
            if not known or len(fds) != 1 or not 0 <= j < self.k or j in self.columns:
                raise ValueError("not a mover of this run")
            mapped = mmap.mmap(fds[0], 0, flags=_MAP_FLAGS)  # the mover's pages, mapped at once
            if len(mapped) < self.spec.unit or len(mapped) % self.spec.unit:
                mapped.close()
                raise ValueError("slots of the wrong size")
        except (OSError, ValueError, UnicodeDecodeError):
            sock.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.columns[j] = _Column(Connection(sock.detach()), mapped, address(mapped))

    def unit_in(self, j: int, msg: bytes) -> None:
        """A message of column ``j``'s tee (engine/paritytee.py): units, or its end,
        taken in (``drain`` gives them to the parity once every column's message of
        the moment is in: a row the others complete is then encoded whole)."""
        col = self.columns[j]
        kind = msg[:1]
        if kind == b"u":
            head = UNIT_ENTRY.size
            size = head + _DIGEST
            if len(msg) == 1 or (len(msg) - 1) % size:
                raise ValueError("a malformed message")
            slots = len(col.map) // self.spec.unit
            for at in range(1, len(msg), size):
                slot, row = UNIT_ENTRY.unpack_from(msg, at)
                if slot >= slots:
                    raise ValueError("a slot out of range")
                if self.broken:  # only drained: the movers must not wait
                    col.freed.append(slot)
                else:
                    col.held.append((slot, row, msg[at + head : at + size]))
            _give_back(col)
        elif kind == b"e":
            col.ended = True
            col.end_volumes = [(str(n), int(s)) for n, s in pickle.loads(msg[1:])]
        else:
            raise ValueError("an unknown message")

    def drain(self) -> None:
        """Offer every unit come in to the parity (its row encoded whole once complete,
        its slot given back then) and every end come in; then settle the oldest offered
        units of a column holding more than ``offered_max`` of its mover's slots, if
        they fit in memory (or the column spills), else the column is held. Settling
        completes no row, so what fits is known once the offers and ends are in."""
        unit, parity = self.spec.unit, self.parity
        for j, col in self.columns.items():
            while col.held:
                slot, row, digest = col.held.popleft()
                parity.offer(j, row, col.base + slot * unit, digest, (j, slot))
        for j, col in self.columns.items():
            if col.end_volumes is not None and not col.end_given:
                col.end_given = True
                parity.end(j, col.end_volumes)
        for j, col in self.columns.items():
            most = offered_max(len(col.map) // unit)
            col.held_since = col.held_since if parity.offered(j) > most else 0.0
            while parity.offered(j) > most:
                if parity.fits(parity.oldest_offered(j)):
                    col.spilling = col.timeouts >= _HOLDS
                elif not col.spilling:
                    col.held_since = col.held_since or time.monotonic()
                    break
                col.held_since = 0.0
                parity.settle(j)
        for j, slot in parity.released():
            self.columns[j].freed.append(slot)
        for col in self.columns.values():
            _give_back(col)

    def hold_deadline(self) -> float | None:
        """When the longest-held column is to spill (None: no column is held)."""
        waiting = [c.held_since for c in self.columns.values() if c.held_since]
        return min(waiting) + self.spec.hold if waiting else None

    def spill_overdue(self) -> None:
        """Columns held ``hold`` seconds spill what they hold, and go on spilling until
        they are back within the window."""
        now = time.monotonic()
        for col in self.columns.values():
            if col.held_since and now >= col.held_since + self.spec.hold:
                col.spilling = True
                col.timeouts += 1
                col.held_since = 0.0
        self.drain()

    def let_go(self) -> None:
        """The stream is given up: every held slot goes back (the movers must not wait)."""
        self.parity.give_up()
        for j, slot in self.parity.released():
            self.columns[j].freed.append(slot)
        for col in self.columns.values():
            while col.held:
                col.freed.append(col.held.popleft()[0])
            _give_back(col)

    def finish(self) -> Written:
        volumes, columns, rows = self.parity.finish()
        log.debug(
            "parity: %d rows, %d spilled; columns held past %g s: %s",
            rows,
            self.parity.acc.spilled_rows,
            self.spec.hold,
            [c.timeouts for _j, c in sorted(self.columns.items())],
        )
        log.debug("parity: %d rows encoded whole", self.parity.acc.whole_rows)
        return Written(tuple(volumes), columns, rows)

    def release(self) -> None:
        """Give up unfinished volumes, links and maps; never raises."""
        if self.parity is not None:
            self.parity.abort()
        for col in self.columns.values():
            with contextlib.suppress(OSError):
                col.conn.close()
        for col in self.columns.values():
            with contextlib.suppress(BufferError, ValueError):
                col.map.close()
        close_all(self.opened)

    def run(self) -> None:
        spec, channel = self.spec, self.channel
        alive, dead = open_devices(list(spec.urls), create_labels=True, timeout=spec.timeout)
        self.opened = alive
        if dead:
            channel.send(Failed("; ".join(f"{d.url}: {d.reason}" for d in dead)))
            return
        channel.send(
            Opened(tuple(d.label.label for d in alive), tuple(d.device.scheme for d in alive))
        )
        self.prepare()
        msg = channel.recv()
        if not isinstance(msg, Begin):
            return
        listener, address = self.begin(msg)
        try:
            channel.send(Listening(address, self.token))
            if not self.serve(listener):
                return
        finally:
            listener.close()
        while isinstance(msg := channel.recv(), Put):
            errors = []
            for name, path in msg.files:
                for dev in self.opened:
                    try:
                        with open(path, "rb") as fh:
                            dev.device.put_stream(name, fh)
                    except (ParbackupError, OSError) as exc:
                        errors.append(f"{dev.url}: {exc}")
            channel.send(Stored(tuple(errors)))

    def serve(self, listener: socket.socket) -> bool:
        """Take the columns until every row is written; True once the volumes are."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.channel, selectors.EVENT_READ, -1)
            sel.register(listener, selectors.EVENT_READ, -2)
            return self._serve(sel, listener)

    def _serve(self, sel: selectors.BaseSelector, listener: socket.socket) -> bool:
        """``serve`` over ``sel``, one selector for the whole set: the links of the
        columns still sending are added and taken out as they come and end (a selector
        made per message, as ``multiprocessing.connection.wait`` does, cost tens of us per
        unit; docs/BENCHMARKS.md, session 12)."""
        channel = self.channel
        watched: dict[int, Connection] = {}
        while True:
            if self.closing and self.parity.finished:
                channel.send(self.finish())
                return True
            if self.closing and self.broken:
                channel.send(Failed(self.broken))
                return False
            for j, col in self.columns.items():
                if not col.ended and j not in watched:
                    sel.register(col.conn, selectors.EVENT_READ, j)
                    watched[j] = col.conn
            timeout, holding = self.spec.timeout, self.hold_deadline()
            if holding is not None and holding - time.monotonic() < timeout:
                timeout = max(0.0, holding - time.monotonic())
            else:
                holding = None
            ready = [key.data for key, _events in sel.select(timeout)]
            if holding is not None:
                self.spill_overdue()
            elif not ready and self.closing:
                self.broken = self.broken or f"no column moved for {self.spec.timeout:g} s"
            for j in ready:
                if j == -1:
                    msg = channel.recv()
                    if isinstance(msg, Abandon):
                        return False
                    if isinstance(msg, Close):
                        self.closing = True
                        self.accept(listener)  # the links not taken yet: every mover linked
                        missing = [j for j in range(self.k) if j not in self.columns]
                        if missing:
                            self.broken = self.broken or f"column {missing[0]} never linked"
                elif j == -2:
                    self.accept(listener)
                elif not self.columns[j].ended:
                    conn = self.columns[j].conn
                    try:
                        self.unit_in(j, conn.recv_bytes())
                    except (*_BAD_MESSAGE, EOFError, OSError) as exc:
                        self.broken = self.broken or f"column {j} ended early ({exc})"
                        sel.unregister(watched.pop(j))
                        with contextlib.suppress(OSError):
                            conn.close()
                        self.columns[j].ended = True  # nothing more comes from it
                    if self.broken:
                        self.let_go()
                if j in watched and self.columns[j].ended:
                    sel.unregister(watched.pop(j))
            if ready and not self.broken and self.parity is not None:
                self.drain()


def _give_back(col: _Column) -> None:
    """Give the column's freed slots back to its mover, in one message."""
    if col.freed:
        msg = b"".join(SLOT.pack(s) for s in col.freed)
        col.freed.clear()
        with contextlib.suppress(OSError):  # a mover past its last unit may be gone
            col.conn.send_bytes(msg)


def collect(spec: ParitySpec, channel: Channel) -> None:
    """The parity collector: see the module docstring."""
    collector = _Collector(spec, channel)
    try:
        collector.run()
    except (ParbackupError, OSError, EOFError) as exc:
        with contextlib.suppress(OSError, ValueError):
            channel.send(Failed(str(exc) or "the controller went away"))
    except Exception as exc:  # a bug: say so (the backup writes parity after the data)
        with contextlib.suppress(OSError, ValueError):
            channel.send(Failed(f"internal error: {exc!r}"))
    finally:
        collector.release()
        with contextlib.suppress(OSError):
            channel.close()


class Collector:
    """The collector's thread as the controller sees it (the ``Worker`` calls it uses)."""

    def __init__(self, spec: ParitySpec) -> None:
        self.channel, theirs = Pipe()
        self.thread = threading.Thread(
            target=collect, args=(spec, theirs), name="parity", daemon=True
        )
        self.thread.start()

    def send(self, msg: object) -> None:
        with contextlib.suppress(OSError, ValueError):  # the collector ended
            self.channel.send(msg)

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def kill(self) -> None:
        """Close the controller's end: the collector gives its volumes up and ends
        (once a device call it is in returns)."""
        with contextlib.suppress(OSError):
            self.channel.close()


def _digest(token: str) -> bytes:
    """What two tokens are compared by: equal digests take the same time whatever the
    guess (no ``secrets``/``hmac``, whose OpenSSL a plain backup never loads)."""
    return blake3(token.encode()).digest()
