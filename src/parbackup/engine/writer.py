"""One writer thread per device: reads byte ranges from the sources, writes records.

The writer takes its items in list order and writes each as one or more records (a record
carries at most ``chunk`` payload bytes, so memory per device is one buffer of ``chunk``
bytes whatever the file sizes; W3). It tells the engine what it did through the shared
event queue; it never touches the catalog.

Work in: ``add(items)`` queues items in ``todo`` (and wakes the writer; a list of items put
in the inbox is queued the same way when the writer reaches it); ``take_back`` lets the
engine move work the writer has not read yet to another device (speed-aware
rebalancing). Messages in: WORK (look at ``todo``), FINISH (close and commit the volume),
STOP. Events out: Record, ItemDone, Durable, FileError, Failed, Committed (all carry
``dev``); with ``batch=True`` they travel as lists, in order, so the engine's thread is
woken once per batch rather than once per record (on small files that hand-off was the
writers' largest Python cost).
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from parbackup.devices.base import ObjectWriter
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError, SourceError
from parbackup.format import (
    CHUNK,
    KIND_CODES,
    VolumeHeader,
    checksum,
    encode_record_header,
    end_record,
)
from parbackup.model import FileEntry, Item, Kind, Piece, RecordRef
from parbackup.sources.remote import CHANGED, SHRANK, is_remote, read_remote


@dataclass
class TakeBack:
    """What ``DeviceWriter.take_back`` gave up: ``removed`` whole items off the end of the
    queue, the new last item if it was cut (``tail``), the item being written before and
    after its cut (``head``), and the pieces that now need another device."""

    removed: int = 0
    tail: Item | None = None
    head: tuple[Item, Item] | None = None
    pieces: list[Piece] = field(default_factory=list)


FINISH = "finish"
STOP = "stop"
WORK = "work"
_EMPTY_DIGEST = checksum(b"")
_SMALL = 64 * 1024
BATCH_EVENTS = 256
BATCH_SECONDS = 0.05
_SLICE = 1 << 20  # payload goes to the device in slices of this size (progress heartbeat)


@dataclass(frozen=True, slots=True)
class Record:
    """A record was written (not yet durable)."""

    dev: int
    file: int
    ref: RecordRef


@dataclass(frozen=True, slots=True)
class ItemDone:
    """The device finished its oldest outstanding item."""

    dev: int


@dataclass(frozen=True, slots=True)
class Durable:
    """Every record this device reported so far is durable."""

    dev: int


@dataclass(frozen=True, slots=True)
class FileError:
    """A source file could not be read (or changed while read); it is skipped."""

    dev: int
    file: int
    error: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The device failed; the writer thread has ended."""

    dev: int
    error: str


@dataclass(frozen=True, slots=True)
class Committed:
    """The device closed its volume; everything it wrote is durable."""

    dev: int


class _Cancelled(Exception):
    """The engine gave this device up; the writer stops quietly."""


WriterEvent = Record | ItemDone | Durable | FileError | Failed | Committed


def changed(error: str) -> bool:
    """True for a FileError that means the file moved under the reader (inconsistent, F4)."""
    return error in (CHANGED, SHRANK)


def volume_name(set_hex: str, label: str, sequence: int) -> str:
    """Where volume ``sequence`` of a set lies on a device."""
    return f"sets/{set_hex}/{label[:12]}-{sequence:04d}.pbv"


class DeviceWriter(threading.Thread):
    """The worker of one device; see the module docstring for its protocol."""

    def __init__(
        self,
        dev: OpenDevice,
        set_id: bytes,
        entries: list[FileEntry],
        meta: dict,
        events: queue.Queue,
        *,
        chunk: int = CHUNK,
        checkpoint_bytes: int = 256 << 20,
        batch: bool = False,
    ) -> None:
        super().__init__(name=f"writer-{dev.index}", daemon=True)
        self.dev = dev
        self.set_id = set_id
        self.entries = entries
        self.meta = meta
        self.events = events
        self.chunk = chunk
        self.checkpoint_bytes = checkpoint_bytes
        self.inbox: queue.Queue = queue.Queue()
        self.todo: deque[Item] = deque()
        self.lock = threading.Lock()
        self.current: Item | None = None  # the item being written, its end, and how far
        self.current_end = 0  # the writer has committed to read (all under ``lock``)
        self.reading_to = 0
        self.buffer = bytearray(chunk)
        self.volume: ObjectWriter | None = None
        self.volume_name = ""
        self.sequence = 0
        self.position = 0
        self.records = 0
        self.since_checkpoint = 0
        self.busy_seconds = 0.0
        # When the device last accepted bytes; read by the engine's hang check, so a slow
        # link writing one large record is not taken for a hung one (R1).
        self.heartbeat = time.monotonic()
        # Set by the engine when it gives the device up: a hung writer that wakes up
        # later stops at the next record instead of writing the rest of its queue.
        self.cancelled = threading.Event()
        # Payload bytes handed to the device so far (per slice, so finer than records);
        # read by the engine's pacing in ``--balance time``.
        self.sent = 0
        # With ``batch``, events go to the engine as lists (at most BATCH_EVENTS of them,
        # at most BATCH_SECONDS old): one queue hand-off per list instead of per record.
        self.batch = batch
        self.pending_events: list[WriterEvent] = []
        self.flushed = time.monotonic()

    # -- thread body ---------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                msg = self.inbox.get()
                if msg == STOP:
                    return
                if msg == FINISH:
                    self._commit()
                    self._send(Committed(self.dev.index), flush=True)
                    continue
                if isinstance(msg, list):  # items sent straight to the inbox
                    with self.lock:
                        self.todo.extend(msg)
                while item := self._next():
                    self._write_item(item)
                self._flush()
        except _Cancelled:
            self._abort()
        except DeviceError as exc:
            # Tell the engine first: aborting a broken device may itself hang.
            self._send(Failed(self.dev.index, str(exc)), flush=True)
            self._abort()
        except Exception as exc:
            self._send(Failed(self.dev.index, f"internal error: {exc!r}"), flush=True)
            self._abort()

    def _send(self, event: WriterEvent, *, flush: bool = False) -> None:
        """Tell the engine (batched when ``batch``; order is always kept)."""
        if not self.batch:
            self.events.put(event)
            return
        self.pending_events.append(event)
        if (
            flush
            or len(self.pending_events) >= BATCH_EVENTS
            or time.monotonic() - self.flushed >= BATCH_SECONDS
        ):
            self._flush()

    def _flush(self) -> None:
        if self.pending_events:
            self.events.put(self.pending_events)
            self.pending_events = []
        self.flushed = time.monotonic()

    def add(self, items: list[Item]) -> None:
        """Queue items after those already queued (called from the engine's thread)."""
        with self.lock:
            self.todo.extend(items)
        self.inbox.put(WORK)

    def _next(self) -> Item | None:
        with self.lock:
            self.current = self.todo.popleft() if self.todo else None
            if self.current is not None:
                self.current_end = self.current.offset + self.current.size
                self.reading_to = self.current.offset
            return self.current

    def take_back(self, nbytes: int) -> TakeBack:
        """Give up to ``nbytes`` of work not yet read, taken from the end of the queue.

        Whole items come off the end of ``todo`` first; the last one may be cut (its
        front stays here); then the tail of the item being written may be cut beyond the
        chunk in flight. Cuts smaller than one chunk are not worth it and are not made.
        The engine mirrors the result on its own view of the queue.
        """
        out = TakeBack()
        with self.lock:
            while self.todo and nbytes > 0:
                last = self.todo[-1]
                if last.size <= nbytes:
                    self.todo.pop()
                    out.removed += 1
                    out.pieces.append(Piece(last.file, last.offset, last.size))
                    nbytes -= last.size
                    continue
                if nbytes >= self.chunk:  # cut the last item; keep its front here
                    out.tail = Item(last.file, last.offset, last.size - nbytes, last.device)
                    out.pieces.append(Piece(last.file, last.offset + out.tail.size, nbytes))
                    self.todo[-1] = out.tail
                return out
            cur = self.current
            if cur is None or self.todo or nbytes < self.chunk:
                return out
            give = min(nbytes, self.current_end - self.reading_to)
            if give >= self.chunk:
                self.current_end -= give
                out.head = (
                    cur,
                    Item(cur.file, cur.offset, self.current_end - cur.offset, cur.device),
                )
                out.pieces.append(Piece(cur.file, self.current_end, give))
                self.current = out.head[1]
        return out

    # -- volumes -------------------------------------------------------------------------
    def _open_volume(self) -> None:
        self.sequence += 1
        self.volume_name = volume_name(self.set_id.hex(), self.dev.label.label, self.sequence)
        header = VolumeHeader(
            set_id=self.set_id,
            label=bytes.fromhex(self.dev.label.label)[:16].ljust(16, b"\0"),
            sequence=self.sequence,
            created_ns=time.time_ns(),
            meta={**self.meta, "label": self.dev.label.label, "volume": self.sequence},
        ).encode()
        self.volume = self.dev.device.create(self.volume_name)
        self.volume.write(header)
        self.position = len(header)
        self.records = 0

    def _commit(self) -> None:
        if self.volume is None:
            return
        started = time.monotonic()
        self.volume.write(end_record(self.set_id, self.records).encode())
        self.volume.commit()
        self.volume = None
        self.since_checkpoint = 0
        self.busy_seconds += time.monotonic() - started

    def _abort(self) -> None:
        if self.volume is not None:
            self.volume.abort()
            self.volume = None

    # -- records -------------------------------------------------------------------------
    def _emit_record(self, item: Item, entry: FileEntry, offset: int, payload: memoryview) -> None:
        assert self.volume is not None
        if self.cancelled.is_set():
            raise _Cancelled
        digest = checksum(payload) if len(payload) else _EMPTY_DIGEST
        header = encode_record_header(
            KIND_CODES[entry.kind],
            self.set_id,
            item.file,
            offset,
            len(payload),
            entry.size,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime_ns,
            digest,
            os.fsencode(entry.path),
            os.fsencode(entry.link) if entry.link else b"",
        )
        if len(payload) <= _SMALL:
            self.volume.write(header + payload)
            self.sent += len(payload)
        else:
            self.volume.write(header)
            for start in range(0, len(payload), _SLICE):
                piece = payload[start : start + _SLICE]
                self.volume.write(piece)
                self.sent += len(piece)
                self.heartbeat = time.monotonic()
        ref = RecordRef(
            self.dev.label.label,
            self.volume_name,
            self.position,
            len(header),
            offset,
            len(payload),
            digest,
        )
        self.position += len(header) + len(payload)
        self.records += 1
        self.since_checkpoint += len(header) + len(payload)
        self.heartbeat = time.monotonic()
        self._send(Record(self.dev.index, item.file, ref))

    def _write_item(self, item: Item) -> None:
        started = time.monotonic()
        if self.volume is None:
            self._open_volume()
        entry = self.entries[item.file]
        if entry.kind is not Kind.FILE or item.size == 0:
            self._emit_record(item, entry, item.offset, memoryview(b""))
        else:
            self._copy_range(item, entry)
        self._send(ItemDone(self.dev.index))
        if self.since_checkpoint >= self.checkpoint_bytes and self.volume is not None:
            if self.volume.checkpoint():
                self._send(Durable(self.dev.index), flush=True)
            self.since_checkpoint = 0
        self.busy_seconds += time.monotonic() - started

    def _copy_remote(self, item: Item, entry: FileEntry) -> None:
        """Like _copy_range, for a file of a remote tree (sources/remote.py)."""
        try:
            for offset, view in read_remote(entry, item.offset, item.size, self.buffer):
                self._emit_record(item, entry, offset, view)
        except SourceError as exc:
            self.events.put(FileError(self.dev.index, item.file, str(exc)))

    def _copy_range(self, item: Item, entry: FileEntry) -> None:
        if is_remote(entry.read_path):
            self._copy_remote(item, entry)
            return
        try:
            # O_NONBLOCK: a file swapped for a FIFO since the scan must not hang the run
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(entry.read_path, flags)
        except OSError as exc:
            self._send(FileError(self.dev.index, item.file, exc.strerror or str(exc)))
            return
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != stat.S_IFMT(entry.mode):
                self._send(FileError(self.dev.index, item.file, "file type changed since the scan"))
                return
            offset = item.offset
            view = memoryview(self.buffer)
            while True:
                with self.lock:  # take_back may have cut this item's tail
                    end = self.current_end
                    if offset >= end:
                        break
                    want = min(self.chunk, end - offset)
                    self.reading_to = offset + want
                try:
                    got = os.preadv(fd, [view[:want]], offset)
                except OSError as exc:
                    self._send(FileError(self.dev.index, item.file, exc.strerror or str(exc)))
                    return
                if got != want:
                    self._send(FileError(self.dev.index, item.file, SHRANK))
                    return
                self._emit_record(item, entry, offset, view[:got])
                offset += got
            st = os.fstat(fd)
            if stat.S_ISBLK(entry.mode):
                return  # a device's node says nothing of its content; snapshot it instead
            if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
                self._send(FileError(self.dev.index, item.file, CHANGED))
        finally:
            os.close(fd)
