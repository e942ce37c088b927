"""The mover: one process per device, writing the records of its share of a backup.

``move(spec, channel)`` is a worker (parbackup/workers.py): it opens its device and its
sources from their URLs, takes items in batches, reads each byte range through the
Source interface, hashes it, writes records into a volume, and answers only with
messages. Nothing is shared with the dispatcher, so a mover can run on another host.

Conversation (dispatcher -> mover, then what the mover answers):

    (start)        -> Started(), Opened(label or None, space, scheme, sequential) | Failed
    Label()        -> Labelled(label) | Failed          write a label at first use
    Probe(limit)   -> Speed(bytes/s) | Failed           --balance time without a hint
    Begin(set, meta)                                    the set the volumes belong to
    Work(columns)  -> Progress(...)*, Problem(...)*     items in list order (W1)
    Finish()       -> Metas(...)?, Durable(...), Committed() | Failed
    Put(name, path)-> Stored(name, error)               the catalog copy (``patch``: bytes
                                                        put instead of the file's there)
    Stop()         -> (the mover ends)

``Progress(sent, done)`` comes at most every ``PROGRESS_SECONDS`` while busy and when
its queue runs dry: ``sent`` payload bytes so far, ``done`` the sequence number of the
last item fully written. ``Durable(upto, columns)`` follows every checkpoint (every
``checkpoint_bytes``, and after each stream segment) and the commit: the records written
since the last one (kept here as tuples, sent as columns) are now durable and every item
up to ``upto`` is. Only then
do they go to the catalog. A device error ends the mover with ``Failed``; a source
error skips the file with ``Problem`` (``kind``: "skipped"; "changed" when it changed
under the reader; "grew" when it only grew: what was read is kept).

A file, directory or symlink with extended attributes gets a kind-8 "meta" record
after the records of its first segment, once that was read whole (docs/FORMAT.md). A
regular file's come from its reader when its source reads them there (a local tree:
from the open descriptor, not in the scan); those go back in ``Metas`` just before the
``Durable`` that covers the file, for the catalog.

Records of small files are gathered into one large write; a payload larger than
``SMALL`` (moversource.py) goes to the device in 1 MiB slices, so that progress keeps
moving on a slow link. Reading the sources is the mixin ``SourceSide`` (moversource.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from parbackup.devices.base import ObjectWriter
from parbackup.devices.probe import probe_speed
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.messages import (
    DATA,
    FID,
    KIND,
    META,
    OFF,
    SEQ,
    SIZE,
    Begin,
    Committed,
    Durable,
    Failed,
    Finish,
    Label,
    Labelled,
    Metas,
    MoverSpec,
    Opened,
    Probe,
    Problem,
    Progress,
    Put,
    Speed,
    Started,
    Stop,
    Stored,
    Work,
)
from parbackup.engine.moversource import GATHER, ROOM, SMALL, SourceSide
from parbackup.engine.putfile import put_file
from parbackup.engine.records import META_CODE, plain_header, stored_record
from parbackup.entries import FILE
from parbackup.errors import DeviceError, SourceError, UsageError
from parbackup.format import VolumeHeader, checksum, end_record
from parbackup.sources.base import FileReader, Source, SourceChanged, SourceGrew
from parbackup.workers import Channel

if TYPE_CHECKING:  # imported by Begin when the set has them (not for a plain backup)
    from parbackup.crypto.codec import Codec
    from parbackup.engine.paritytee import ParityTee

PROGRESS_SECONDS = 0.05
_SLICE = 1 << 20
_RECORDS = 8192
"""Checkpoint after this many records at the latest, so the references a mover holds
and sends at once stay bounded (a million small files)."""
_EMPTY_DIGEST = checksum(b"")


def volume_name(set_hex: str, label: str, sequence: int) -> str:
    """Where volume ``sequence`` of a set lies on a device."""
    return f"sets/{set_hex}/{label[:12]}-{sequence:04d}.pbv"


# -- the mover -------------------------------------------------------------------------
@dataclass
class _Volume:
    writer: ObjectWriter
    name: str
    position: int
    records: int = 0
    since_checkpoint: int = 0
    volume_id: bytes = b""


@dataclass
class _Mover(SourceSide):
    spec: MoverSpec
    channel: Channel
    device: Any = None
    label: str = ""
    set_id: bytes = b""
    meta: dict = field(default_factory=dict)
    sources: dict[int, Source] = field(default_factory=dict)
    queue: deque = field(default_factory=deque)
    """The items of the ``Work`` not yet written, an iterator per message, oldest first:
    each item's tuple is made when it is written, so a window of many small files is
    held as its messages' columns, not as a tuple per item (engine/dispatch.py)."""
    volume: _Volume | None = None
    sequence: int = 0
    gather: bytearray = field(default_factory=lambda: bytearray(ROOM))
    gather_view: memoryview = field(init=False)
    fill: int = 0
    """Bytes of ``gather`` waiting for the next write. The buffer is reused after each
    write: every writer copies what it keeps before ``write`` returns (devices/base.py)."""
    pending: list = field(default_factory=list)
    metas: list = field(default_factory=list)
    """(file id, payload, warning) of attributes read since the last Durable."""
    sent: int = 0
    done: int = 0
    busy: float = 0.0
    told: float = 0.0
    reader: FileReader | None = None
    buffer: memoryview = field(default_factory=lambda: memoryview(bytearray()))
    codec: Codec | None = None
    """Set by Begin when the set compresses or encrypts: records are then version 4."""
    tee: ParityTee | None = None
    """Set by Begin with ``--parity``: the volumes' bytes go to the parity collector too."""

    def __post_init__(self) -> None:
        self.gather_view = memoryview(self.gather)

    # -- messages ------------------------------------------------------------------------
    def tell(self, msg: object) -> None:
        self.channel.send(msg)

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.told >= PROGRESS_SECONDS:
            self.told = now
            self.tell(Progress(self.sent, self.done, self.busy))

    def handle(self, msg: object) -> bool:
        """Act on one message; False when the mover should end."""
        match msg:
            case Work():
                if len(msg):
                    self.queue.append(msg.items())
            case Finish():
                self.commit()
                if self.tee is not None:
                    self.tee.end()
                self.tell(Committed())
            case Begin(set_id=set_id, meta=meta, codec=spec, parity=link):
                self.set_id, self.meta = set_id, meta
                if spec is not None and spec.active:
                    from parbackup.crypto.codec import Codec

                    self.codec = Codec(spec)
                else:
                    self.codec = None
                if link is not None:
                    from parbackup.engine.paritytee import ParityTee

                    self.tee = ParityTee(link, lambda: self.progress(force=True))
            case Label():
                self.label = self.device.ensure_label().label
                self.tell(Labelled(self.label, self.device.overwrote))
            case Probe(limit=limit, seconds=seconds):
                self.tell(Speed(probe_speed(self.device, limit=limit, seconds=seconds)))
            case Put(name=name, path=path, patch=patch):
                try:
                    put_file(self.device, name, path, self.progress, patch)
                    self.tell(Stored(name))
                except (DeviceError, OSError) as exc:
                    self.tell(Stored(name, str(exc)))
            case Stop():
                return False
        return True

    def run(self) -> None:
        while True:
            if not self.queue:
                self.flush_gather()
                self.progress(force=True)
                if not self.handle(self.channel.recv()):
                    return
                continue
            while self.channel.poll(0):  # take more work, or a Stop, without waiting
                if not self.handle(self.channel.recv()):
                    return
            started = time.monotonic()
            batch = 0
            while self.queue and batch < 64:
                for item in islice(self.queue[0], 64 - batch):
                    self.write_item(item)
                    batch += 1
                if batch < 64:  # that message's items ran out
                    self.queue.popleft()
            self.busy += time.monotonic() - started
            self.progress()

    # -- volumes -------------------------------------------------------------------------
    def open_volume(self) -> _Volume:
        self.sequence += 1
        name = volume_name(self.set_id.hex(), self.label, self.sequence)
        label = bytes.fromhex(self.label)[:16].ljust(16, b"\0")
        meta = {**self.meta, "label": self.label, "volume": self.sequence}
        volume_id = b""
        if self.codec is not None:
            volume_id = os.urandom(16)  # secrets.token_bytes, without hmac's OpenSSL
            meta = self.volume_meta(meta, label, volume_id)
        header = VolumeHeader(
            set_id=self.set_id,
            label=label,
            sequence=self.sequence,
            created_ns=time.time_ns(),
            meta=meta,
        ).encode()
        writer = self.device.create(name)
        if self.tee is not None:
            writer = self.tee.wrap(name, writer)
        writer.write(header)
        self.volume = _Volume(writer, name, len(header), volume_id=volume_id)
        return self.volume

    def volume_meta(self, meta: dict, label: bytes, volume_id: bytes) -> dict:
        """The header metadata of a version-4 volume: its random id in the clear; in an
        encrypted set, the set metadata sealed, only the label and sequence in the clear."""
        assert self.codec is not None
        return self.codec.seal_header_meta(meta, self.set_id, label, volume_id)

    def flush_gather(self) -> None:
        if self.fill and self.volume is not None:
            self.volume.writer.write(memoryview(self.gather)[: self.fill])
            self.fill = 0

    def gathered(self, data: bytes | bytearray | memoryview) -> None:
        """Append to the gather buffer (written first when full; a larger ``data``
        straight after it)."""
        n = len(data)
        if self.fill + n > ROOM:
            self.flush_gather()
            if n > ROOM:
                assert self.volume is not None
                self.volume.writer.write(data)
                return
        self.gather[self.fill : self.fill + n] = data
        self.fill += n

    def make_durable(self, commit: bool) -> None:
        """Checkpoint (or commit) the volume and tell which records are now durable."""
        vol = self.volume
        if vol is None:
            return
        started = time.perf_counter()
        self.flush_gather()
        if commit:
            vol.writer.write(end_record(self.set_id, vol.records).encode())
            vol.writer.commit()
            self.volume = None
            durable = True
        else:
            durable = vol.writer.checkpoint()
        if self.codec is not None:  # the device's part only, not the dispatcher's below
            self.codec.compressor.wrote(time.perf_counter() - started, 0)  # (compress.py)
        if not durable:
            return
        vol.since_checkpoint = 0
        records, self.pending = self.pending, []
        if self.metas:
            self.tell(Metas(self.metas))
            self.metas = []
        self.tell(Durable.of(self.done, records))

    def commit(self) -> None:
        self.close_reader()
        started = time.monotonic()
        self.make_durable(commit=True)
        self.busy += time.monotonic() - started

    # -- records -------------------------------------------------------------------------
    def record(self, item: tuple, offset: int, payload: memoryview | bytes) -> None:
        vol = self.volume or self.open_volume()
        n = len(payload)
        if self.codec is not None:
            payload, header, digest = stored_record(
                self.codec, self.set_id, self.label, vol.volume_id, item, offset, payload
            )
            stored = len(payload)
            started = time.perf_counter()
            self.put(vol, header, payload, n)
            # what held this record up, the device or zstd: compress.py picks the level
            self.codec.compressor.wrote(time.perf_counter() - started, n)
        else:
            stored = -1
            digest = checksum(payload) if n else _EMPTY_DIGEST
            header = plain_header(self.set_id, item, offset, n, digest)
            self.put(vol, header, payload, n)
        self.pending.append(
            (item[FID], vol.name, vol.position, len(header), offset, n, digest, stored)
        )
        size = len(header) + len(payload)
        vol.position += size
        vol.records += 1
        vol.since_checkpoint += size

    def put(self, vol: _Volume, header: bytes, payload: memoryview | bytes, source: int) -> None:
        """Append one record to the volume (small ones gathered into one write).
        ``sent`` counts ``source`` bytes (what the plan assigned), spread over the slices."""
        n = len(payload)
        if n <= SMALL:
            self.gathered(header)
            self.gathered(payload)
            self.sent += source
            if self.fill >= GATHER:
                self.flush_gather()
        else:
            self.gathered(header)
            self.flush_gather()
            view = memoryview(payload)
            told = 0
            for at in range(0, n, _SLICE):  # slices: progress moves on a slow link too
                vol.writer.write(view[at : at + _SLICE])
                part = source * min(n, at + _SLICE) // n - told
                self.sent += part
                told += part
                self.progress()

    def meta_record(self, item: tuple, payload: bytes) -> None:
        """The item's extended attributes as a kind-8 record (record version 3). The
        catalog keeps them with the file (from the scan, or ``Metas``): this record is
        what makes the device readable without it, so it is not among the references
        sent back."""
        vol = self.volume or self.open_volume()
        if self.codec is not None:  # compressed and sealed like every record of the set
            payload, header, _ = stored_record(
                self.codec, self.set_id, self.label, vol.volume_id, item, 0, payload, META_CODE
            )
        else:
            header = plain_header(self.set_id, item, 0, len(payload), checksum(payload), META_CODE)
        self.gathered(header)
        self.gathered(payload)
        vol.position += len(header) + len(payload)
        vol.records += 1
        vol.since_checkpoint += len(header) + len(payload)
        if self.fill >= GATHER:
            self.flush_gather()

    def write_item(self, item: tuple) -> None:
        size = item[SIZE]
        data = item[DATA]
        if data is not None:  # a stream segment: its bytes came with the item
            view = memoryview(data)
            for at in range(0, size, self.spec.chunk):
                self.record(item, item[OFF] + at, view[at : at + self.spec.chunk])
            self.done = item[SEQ]
            self.make_durable(commit=False)  # the dispatcher frees the segment's buffer
            # a device that cannot checkpoint: say it is written now, so whether the
            # segment counts as let go when the device fails next never depends on timing
            self.progress(force=True)
            return
        whole = True
        meta = item[META]
        if item[KIND] != FILE or size == 0:  # only regular files carry payload
            self.record(item, item[OFF], b"")
        elif (small := self.small_file(item, not meta)) is not None:
            meta = meta or small
        else:
            whole = False
            try:
                self.copy_range(item)
                whole = True
                if not meta and item[OFF] == 0:
                    meta = self.reader_xattrs(item[FID])
            except SourceGrew as exc:
                self.tell(Problem(item[FID], str(exc), "grew"))
            except SourceChanged as exc:
                self.tell(Problem(item[FID], str(exc), "changed"))
            except SourceError as exc:
                self.tell(Problem(item[FID], str(exc), "skipped"))
            finally:
                self.close_reader()
        if whole and meta:
            self.meta_record(item, meta)
        self.done = item[SEQ]
        vol = self.volume
        if vol is not None and (
            vol.since_checkpoint >= self.spec.checkpoint_bytes or len(self.pending) >= _RECORDS
        ):
            self.make_durable(commit=False)


def move(spec: MoverSpec, channel: Channel) -> None:
    """The mover worker: see the module docstring."""
    mover = _Mover(spec, channel)
    channel.send(Started())
    try:
        mover.device = RetryingDevice(open_device(spec.url))
        mover.device.open()
        caps = mover.device.capabilities
        # a tape is read only when asked for its label at backup time (it starts anew)
        label = None if caps.sequential else mover.device.read_label()
        mover.label = label.label if label else ""
        channel.send(
            Opened(mover.label or None, mover.device.space(), mover.device.scheme, caps.sequential)
        )
        with paused_gc():  # items and records make no cycles: no collection need run
            mover.run()
    except (DeviceError, UsageError) as exc:
        channel.send(Failed(str(exc), isinstance(exc, UsageError)))
        abort(mover)
    else:
        close(mover)


def abort(mover: _Mover) -> None:
    """Give up the volume being written and release everything; never raises."""
    mover.close_reader()
    if mover.volume is not None:
        with contextlib.suppress(Exception):  # the device already failed
            mover.volume.writer.abort()
    close(mover)


def close(mover: _Mover) -> None:
    if mover.tee is not None:
        mover.tee.close()
    for src in mover.sources.values():
        src.close()
    if mover.device is not None:
        with contextlib.suppress(Exception):  # closing a failed device may fail too
            mover.device.close()
