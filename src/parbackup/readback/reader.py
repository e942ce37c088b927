"""The reader: one process per device, reading back and checking the records of a set.

``read_worker(spec, channel)`` is started through an executor (parbackup.workers). It
opens its device from the URL in its spec (wrapped so transient errors are retried),
reads its label and says which device it is (readback/messages.py). Given work, it
fetches every wanted record, checks it (header against the catalog's expectation,
payload against its BLAKE3 checksum) and hands each good payload to its sink
(readback/sinks.py). Results go back in batches, a few times a second, never one message
per record. Records that lie next to each other in a volume are fetched with one read of
up to ``SPAN`` bytes; sequential devices (tape) are read front to back in one pass.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

from parbackup.crypto.codec import Codec, CodecSpec, Place, RecordMeta, label_bytes
from parbackup.devices.base import Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.engine.devices import label_from_volumes
from parbackup.errors import DeviceError, FormatError, ParbackupError
from parbackup.format import (
    MAX_NAME,
    MAX_PAYLOAD,
    MAX_STORED,
    RECORD_FIXED_SIZE,
    RecordHeader,
    VolumeHeader,
    checksum,
    iter_volume,
    parse_record_header,
    read_volume_header,
)
from parbackup.model import RecordRef
from parbackup.readback.frames import check_volumes
from parbackup.readback.messages import (
    Chunk,
    Credit,
    Finished,
    Opened,
    OpenFailed,
    Progress,
    ReaderSpec,
    VolumeDamage,
    Work,
    identity,
    unpack,
)
from parbackup.readback.relay import build
from parbackup.readback.sinks import Sink, StreamSinkSpec

SPAN = 16 << 20
MAX_HEADER = RECORD_FIXED_SIZE + 8 + 2 * MAX_NAME + 4
"""No record header is longer; a catalog saying otherwise is damaged or crafted."""
_FLUSH_SECONDS = 0.2
_FLUSH_ITEMS = 4096
_ANNOUNCE = 1 << 20
"""Reads at least this large are announced to the parent before they start."""

Deliver = Callable[[int, RecordRef, memoryview | None, str], None]
"""deliver(file id, record, payload or None, error text) -- called once per record; the
payload is a view of the read buffer, good only until deliver returns."""
Announce = Callable[[int], None]
"""announce(bytes): a read of that many bytes starts now (0: a record went by unused)."""


def _quiet(_nbytes: int) -> None:
    """The default ``announce``: tell nobody."""


def expected_owner(fid: int, ref: RecordRef, set_id: bytes) -> tuple[bytes, int]:
    """The (set id, file id) a record's header must carry: its origin set's, if reused."""
    if ref.origin_set:
        return bytes.fromhex(ref.origin_set), ref.origin_file
    return set_id, fid


_PLAIN = Codec(CodecSpec())


def open_record(
    header: RecordHeader,
    fid: int,
    ref: RecordRef,
    set_id: bytes,
    stored: memoryview | bytes,
    codec: Codec,
    place: Place | None,
    ident: int | None = None,
) -> tuple[str, memoryview | bytes | None]:
    """('', payload) if the record matches the catalog, decodes (version 4: decompress,
    decrypt and authenticate) and matches its checksum; else (what is wrong, None).
    ``ident``: the catalog row's ``identity``, which the header (or its sealed metadata)
    must give too."""
    length = ref.size if ref.stored < 0 else ref.stored  # ref.length, without the call
    owner_set, owner_file = expected_owner(fid, ref, set_id) if ref.origin_set else (set_id, fid)
    # the header is the one the catalog describes
    if (header.set_id, header.file_id, header.offset, header.size, header.checksum) != (
        owner_set, owner_file, ref.offset, ref.size, ref.checksum
    ) or header.stored_size != length:  # fmt: skip
        return "record does not match the catalog", None
    if len(stored) != length:
        return "record is cut short", None
    payload: memoryview | bytes = stored
    about: RecordHeader | RecordMeta = header
    if header.stored >= 0:
        try:
            meta, payload = codec.decode(
                stored,
                flags=header.flags,
                set_id=owner_set,
                file_id=owner_file,
                offset=header.offset,
                size=header.size,
                file_size=header.file_size,
                kind=header.code,
                place=place,
                what=f"{ref.volume} at {ref.position}",
            )
        except FormatError as exc:
            return str(exc), None
        if codec.digest_of(header.flags, payload) != ref.checksum:
            return "payload checksum mismatch", None
        about = meta if meta is not None else header
    elif checksum(payload) != ref.checksum:
        return "payload checksum mismatch", None
    if ident is not None and ident != identity(
        about.path, about.mode, about.uid, about.gid, about.mtime_ns
    ):
        return "the catalog's path, mode, owner or time differ from the record's", None
    return "", payload


class _Places:
    """Where records lie, for the associated data of encrypted ones: the device label
    and each volume's random id (read once from its header)."""

    def __init__(self, device: Device, label: str, codec: Codec, idents: dict[int, int]) -> None:
        self.device, self.codec, self.idents = device, codec, idents
        self.label = label_bytes(label)
        self.ids: dict[str, bytes | str] = {}

    def volume_id(self, volume: str, header: VolumeHeader | None = None) -> bytes | str:
        """The volume's id, or why it cannot be had (a damaged header)."""
        known = self.ids.get(volume)
        if known is not None:
            return known
        try:
            if header is None:
                with self.device.open_read(volume, 64 * 1024) as stream:
                    header = read_volume_header(stream)
            found: bytes | str = bytes.fromhex(str(header.meta.get("volume_id", "")))
            if len(found) != 16:
                found = "volume header has no volume id"
        except (DeviceError, FormatError, ValueError) as exc:
            found = f"volume header: {exc}"
        self.ids[volume] = found
        return found

    def place(self, ref: RecordRef) -> Place | str:
        if not self.codec.encrypted:
            return Place(self.label, bytes(16))
        vid = self.volume_id(ref.volume)
        return vid if isinstance(vid, str) else Place(self.label, vid)


class _Buffer:
    """One reader's read buffer, reused span after span: a fresh 16 MiB ``bytes`` per
    read costs more in page faults than the read itself. It grows (never past ``cap``)
    by replacement, so a view of an old one that is still held never blocks it."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data = cap, bytearray()

    def fit(self, length: int) -> bytearray:
        """The buffer, large enough for ``length`` bytes unless that is over ``cap``."""
        if len(self.data) < length <= self.cap:
            want = min(self.cap, max(length, 2 * len(self.data)))
            self.data = bytearray()  # the old one goes first: never both at once (+8 MiB)
            self.data = bytearray(want)
        return self.data


def read_records(
    device: Device,
    set_id: bytes,
    wanted: Sequence[tuple[int, RecordRef]],
    deliver: Deliver,
    *,
    span: int = SPAN,
    by_offset: bool = False,
    announce: Announce = _quiet,
    codec: Codec = _PLAIN,
    label: str = "",
    idents: dict[int, int] | None = None,
) -> None:
    """Fetch and check every wanted record of one device; report each through deliver.

    ``by_offset``: a random-access device serves the records in file-offset order (a
    stream restore writes them in that order), else in volume order. ``announce`` hears
    of every read before it starts, so a slow device is told from a hung one. ``codec``
    decodes version-4 records; ``label`` is the device's (encrypted records are bound
    to it). ``idents`` (readback/messages.py ``identity``) of the files whose own
    records are read: a header that disagrees is damage (a damaged catalog row).
    """
    places = _Places(device, label, codec, idents or {})
    buf = _Buffer(span)
    sane = []
    for fid, ref in wanted:
        sizes_ok = 0 <= ref.size <= MAX_PAYLOAD and -1 <= ref.stored <= MAX_STORED
        if not sizes_ok or not 0 < ref.header_size <= MAX_HEADER:
            deliver(fid, ref, None, "catalog record sizes are out of range")
        elif ref.position < 0 or ref.offset < 0:
            deliver(fid, ref, None, "catalog record position is out of range")
        else:
            sane.append((fid, ref))
    if device.capabilities.sequential:
        _read_sequential(device, set_id, sane, deliver, announce, places)
        return
    if by_offset:
        ordered = sorted(sane, key=lambda w: (w[0], w[1].offset))
    else:
        ordered = sorted(sane, key=lambda w: (w[1].volume, w[1].position))
    for volume, group in groupby(ordered, key=lambda w: w[1].volume):
        batch: list[tuple[int, RecordRef]] = []
        first = last_end = 0  # where the batch's first record starts, its last ends
        for fid, ref in group:
            position = ref.position
            end = position + ref.header_size + (ref.size if ref.stored < 0 else ref.stored)
            if batch and (position != last_end or end - first > span):  # not contiguous
                _read_span(device, volume, set_id, batch, deliver, announce, places, buf)
                batch = []
            if not batch:
                first = position
            batch.append((fid, ref))
            last_end = end
        if batch:
            _read_span(device, volume, set_id, batch, deliver, announce, places, buf)


def _read_span(
    device: Device,
    volume: str,
    set_id: bytes,
    batch: list[tuple[int, RecordRef]],
    deliver: Deliver,
    announce: Announce,
    places: _Places,
    buf: _Buffer,
) -> None:
    """Read one run of adjacent records with one read (into ``buf`` where the device
    can), check each and deliver it; ``buf`` is overwritten by the next span."""
    start = batch[0][1].position
    last = batch[-1][1]
    length = last.position + last.header_size + last.length - start
    announce(length)
    try:
        data = device.read_view(volume, start, length, buf.fit(length))
    except DeviceError as exc:
        for fid, ref in batch:
            deliver(fid, ref, None, str(exc))
        return
    for fid, ref in batch:
        at = ref.position - start
        body = at + ref.header_size
        stored = data[body : body + (ref.size if ref.stored < 0 else ref.stored)]
        try:
            header = parse_record_header(data[at:body])
        except FormatError as exc:
            deliver(fid, ref, None, f"damaged record header: {exc}")
            continue
        place = places.place(ref) if header.stored >= 0 else None
        if isinstance(place, str):
            deliver(fid, ref, None, place)
            continue
        ident = None if ref.origin_set else places.idents.get(fid)
        error, payload = open_record(header, fid, ref, set_id, stored, places.codec, place, ident)
        deliver(fid, ref, None if error else memoryview(payload), error)


def _read_sequential(
    device: Device,
    set_id: bytes,
    wanted: Sequence[tuple[int, RecordRef]],
    deliver: Deliver,
    announce: Announce,
    places: _Places,
) -> None:
    """One pass front to back over each volume, serving the wanted records as they pass."""
    by_volume: dict[str, dict[int, tuple[int, RecordRef]]] = {}
    for fid, ref in wanted:
        by_volume.setdefault(ref.volume, {})[ref.position] = (fid, ref)
    for volume in sorted(by_volume):
        want = by_volume[volume]
        try:
            with device.open_read(volume) as stream:
                head = read_volume_header(stream)
                if places.codec.encrypted:
                    places.volume_id(volume, head)
                for position, header, payload in iter_volume(stream, head.length):
                    hit = want.pop(position, None)
                    if hit is None:
                        announce(0)
                        continue
                    fid, ref = hit
                    place = places.place(ref) if header.stored >= 0 else None
                    if isinstance(place, str):
                        deliver(fid, ref, None, place)
                    else:
                        ident = None if ref.origin_set else places.idents.get(fid)
                        error, data = open_record(
                            header, fid, ref, set_id, payload, places.codec, place, ident
                        )
                        deliver(fid, ref, None if error else memoryview(data), error)
                    if not want:
                        break
        except (DeviceError, FormatError) as exc:
            for fid, ref in want.values():
                deliver(fid, ref, None, str(exc))
            continue
        for fid, ref in want.values():
            deliver(fid, ref, None, "record not found in volume")


class _Results:
    """Per-file bookkeeping of one reader, flushed to the parent in batches."""

    def __init__(self, channel: Any, sink: Sink, records: list[tuple[int, RecordRef]]) -> None:
        self.channel, self.sink = channel, sink
        self.remaining: dict[int, int] = {}
        for fid, _ref in records:
            self.remaining[fid] = self.remaining.get(fid, 0) + 1
        self.bad: set[int] = set()
        self.good: list[int] = []
        self.held: list[int] = []  # good once the sink has finished (block device)
        self.damaged: list[tuple[int, str]] = []
        self.nbytes = 0
        self.flushed = time.monotonic()

    def announce(self, nbytes: int) -> None:
        """Tell the parent a large read starts (or, now and then, that records go by)."""
        if nbytes >= _ANNOUNCE or time.monotonic() - self.flushed >= _FLUSH_SECONDS:
            self.flush(reading=nbytes, always=True)

    def deliver(self, fid: int, ref: RecordRef, payload: memoryview | None, error: str) -> None:
        self.nbytes += ref.size
        if fid not in self.bad:
            if payload is not None:
                error = self.sink.put(fid, ref, payload)
            if error:
                self.fail(fid, error or "not restored")
        left = self.remaining[fid] = self.remaining[fid] - 1
        if left == 0 and fid not in self.bad:
            error = self.sink.complete(fid)
            if error:
                self.bad.add(fid)
                self.damaged.append((fid, error))
            else:
                (self.held if self.sink.deferred else self.good).append(fid)
        full = len(self.good) + len(self.damaged) >= _FLUSH_ITEMS
        if full or time.monotonic() - self.flushed >= _FLUSH_SECONDS:
            self.flush()

    def fail(self, fid: int, error: str) -> None:
        self.bad.add(fid)
        self.sink.fail(fid)
        self.damaged.append((fid, error))

    def flush(self, reading: int = 0, always: bool = False) -> None:
        if self.good or self.damaged or self.nbytes or always:
            unowned = self.sink.take_unowned()
            self.channel.send(Progress(self.good, self.damaged, self.nbytes, reading, unowned))
            self.good, self.damaged, self.nbytes = [], [], 0
        self.flushed = time.monotonic()

    def finish(self) -> None:
        error = self.sink.finish()
        for fid in self.held:
            if error:
                self.damaged.append((fid, error))
            else:
                self.good.append(fid)
        for fid, left in self.remaining.items():
            if left and fid not in self.bad:
                self.damaged.append((fid, "record not read"))
        self.flush()


class _Flow:
    """Stream sink flow control: at most ``window`` chunks the parent has not written."""

    def __init__(self, channel: Any, window: int) -> None:
        self.channel, self.window, self.outstanding = channel, max(1, window), 0

    def emit(self, offset: int, data: bytes) -> None:
        while self.outstanding >= self.window:
            msg = self.channel.recv()
            if isinstance(msg, Credit):
                self.outstanding -= msg.n
        self.channel.send(Chunk(offset, data))
        self.outstanding += 1


def _open(spec: ReaderSpec) -> tuple[Device | None, str, str]:
    """Open the device; (device, its label, '') or (None, '', why not)."""
    try:
        device: Device = RetryingDevice(open_device(spec.url))
    except ParbackupError as exc:
        return None, "", str(exc)
    try:
        device.open(write=False)  # readers write nothing: read-only media work
        label = device.read_label() or label_from_volumes(device)
    except DeviceError as exc:
        _close(device)
        return None, "", str(exc)
    display = device.url.display
    if label is None:
        _close(device)
        return None, "", f"{display}: not a parbackup device (no label)"
    if label.label not in spec.labels:
        _close(device)
        return None, "", f"{display} now holds another device (label {label.label})"
    return device, label.label, ""


def _close(device: Device) -> None:
    with contextlib.suppress(Exception):
        device.close()


def read_worker(spec: ReaderSpec, channel: Any) -> None:
    """Run one reader (see the module and readback/messages.py docstrings)."""
    device, label, error = _open(spec)
    if device is None:
        channel.send(OpenFailed(error))
        return
    channel.send(Opened(label, device.url.display))
    work = channel.recv()
    if not isinstance(work, Work):
        _close(device)
        return
    records = unpack(label, work.records)
    gc.freeze()  # the work lives to the end: no collection need walk it again
    flow = _Flow(channel, work.sink.window if isinstance(work.sink, StreamSinkSpec) else 1)
    try:
        sink = build(work.sink, flow.emit)  # a relay back to the controller too
    except OSError as exc:
        reason = f"{getattr(work.sink, 'path', '')}: {exc.strerror or exc}"
        channel.send(Progress([], [(fid, reason) for fid in {f for f, _ in records}], 0))
        channel.send(Finished())
        _close(device)
        return
    results = _Results(channel, sink, records)
    codec = Codec(work.codec) if work.codec is not None else _PLAIN
    read_records(
        device,
        work.set_id,
        records,
        results.deliver,
        by_offset=isinstance(work.sink, StreamSinkSpec),
        announce=results.announce,
        codec=codec,
        label=label,
        idents=work.idents,
    )
    results.finish()
    if work.frames is not None and not device.capabilities.sequential:
        # a tape is read in one pass only; its stream frames carry CRCs
        for hit in check_volumes(
            device,
            work.set_id,
            unpack(label, work.frames),
            expect_end=work.expect_end,
            codec=codec,
            label=label,
        ):
            if hit.file is not None and not hit.cut:
                channel.send(Progress([], [(hit.file, hit.error)], 0))
            else:  # a cut tail costs a payload-less record no restore reads
                channel.send(VolumeDamage(hit.volume, hit.error, hit.file, hit.cut))
    channel.send(Finished())
    _close(device)
