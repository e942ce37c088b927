"""One writer thread per device: reads byte ranges from the sources, writes records.

The writer takes lists of items from its inbox, in list order, and writes each as one or
more records (a record carries at most ``chunk`` payload bytes, so memory per device is
one buffer of ``chunk`` bytes whatever the file sizes; W3). It tells the engine what it
did through the shared event queue; it never touches the catalog.

Messages in: a list of Items (more work), FINISH (close and commit the volume), STOP.
Events out: Record, ItemDone, Durable, FileError, Failed, Committed (all carry ``dev``).
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass

from parbackup.devices.base import ObjectWriter
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError
from parbackup.format import CHUNK, RecordHeader, VolumeHeader, checksum, end_record
from parbackup.model import FileEntry, Item, Kind, RecordRef

FINISH = "finish"
STOP = "stop"
CHANGED = "file changed while being read"
SHRANK = "file shrank while being read"
_EMPTY_DIGEST = checksum(b"")
_SMALL = 64 * 1024
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

    # -- thread body ---------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                msg = self.inbox.get()
                if msg == STOP:
                    return
                if msg == FINISH:
                    self._commit()
                    self.events.put(Committed(self.dev.index))
                    continue
                for item in msg:
                    self._write_item(item)
        except DeviceError as exc:
            # Tell the engine first: aborting a broken device may itself hang.
            self.events.put(Failed(self.dev.index, str(exc)))
            self._abort()
        except Exception as exc:
            self.events.put(Failed(self.dev.index, f"internal error: {exc!r}"))
            self._abort()

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
        digest = checksum(payload) if len(payload) else _EMPTY_DIGEST
        header = RecordHeader(
            kind=str(entry.kind),
            set_id=self.set_id,
            file_id=item.file,
            offset=offset,
            size=len(payload),
            file_size=entry.size,
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            mtime_ns=entry.mtime_ns,
            checksum=digest,
            path=os.fsencode(entry.path),
            link=os.fsencode(entry.link),
        ).encode()
        if len(payload) <= _SMALL:
            self.volume.write(header + payload)
        else:
            self.volume.write(header)
            for start in range(0, len(payload), _SLICE):
                self.volume.write(payload[start : start + _SLICE])
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
        self.events.put(Record(self.dev.index, item.file, ref))

    def _write_item(self, item: Item) -> None:
        started = time.monotonic()
        if self.volume is None:
            self._open_volume()
        entry = self.entries[item.file]
        if entry.kind is not Kind.FILE or item.size == 0:
            self._emit_record(item, entry, item.offset, memoryview(b""))
        else:
            self._copy_range(item, entry)
        self.events.put(ItemDone(self.dev.index))
        if self.since_checkpoint >= self.checkpoint_bytes and self.volume is not None:
            if self.volume.checkpoint():
                self.events.put(Durable(self.dev.index))
            self.since_checkpoint = 0
        self.busy_seconds += time.monotonic() - started

    def _copy_range(self, item: Item, entry: FileEntry) -> None:
        try:
            fd = os.open(entry.read_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            self.events.put(FileError(self.dev.index, item.file, exc.strerror or str(exc)))
            return
        try:
            offset, end = item.offset, item.offset + item.size
            view = memoryview(self.buffer)
            while offset < end:
                want = min(self.chunk, end - offset)
                try:
                    got = os.preadv(fd, [view[:want]], offset)
                except OSError as exc:
                    self.events.put(FileError(self.dev.index, item.file, exc.strerror or str(exc)))
                    return
                if got != want:
                    self.events.put(FileError(self.dev.index, item.file, SHRANK))
                    return
                self._emit_record(item, entry, offset, view[:got])
                offset += got
            st = os.fstat(fd)
            if stat.S_ISBLK(entry.mode):
                return  # a device's node says nothing of its content; snapshot it instead
            if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
                self.events.put(FileError(self.dev.index, item.file, CHANGED))
        finally:
            os.close(fd)
