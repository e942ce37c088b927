"""Reading a device's volumes front to back for ``rebuild-catalog`` (engine/rebuild.py).

``scan_device`` reads every volume of one device into ``SetFound`` entries, one per set:
its metadata, its files, where each intact record lies, the extended attributes of its
kind-8 records, and what was damaged. Every record is checked while it is read (header
CRC, then the payload's BLAKE3, or for a version-4 record its authentication and keyed
checksum); after a damaged header the reader searches forward for the next intact one,
so one bad byte costs one record, not the rest of the volume. ``device_keys`` finds the
key file encrypted devices carry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from parbackup import xattrs
from parbackup.crypto.codec import FLAG_SEALED, Codec, CodecSpec, Place, label_bytes
from parbackup.crypto.keys import MAX_KEY_FILE, KeyFile
from parbackup.devices.base import Device
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError, FormatError, KeyUnlockError, UsageError
from parbackup.format import (
    RECORD_FIXED_SIZE,
    RECORD_MAGIC,
    RecordHeader,
    decode_record_header,
    read_volume_header,
    record_length,
)
from parbackup.model import FileEntry, Kind, RecordRef


@dataclass
class SetFound:
    """Everything the present devices hold of one set."""

    set_hex: str
    meta: dict
    created_ns: int
    labels: set[str] = field(default_factory=set)
    volumes: int = 0
    closed: int = 0
    closed_names: set[tuple[str, str]] = field(default_factory=set)
    """(label, volume) of the volumes that end with their end record."""
    damaged: list[dict] = field(default_factory=list)
    files: dict[int, FileEntry] = field(default_factory=dict)
    records: list[tuple[int, RecordRef]] = field(default_factory=list)
    metas: dict[int, bytes] = field(default_factory=dict)
    """File id -> extended attributes (the payload of its kind-8 record)."""


class _Window:
    """Forward-only random access over a stream: ``read(pos, n)`` for any ``pos`` at or
    after the last one asked. Holds at most one record (bounded by the format's limits)
    plus 1 MiB, so a tape is still read in one pass and memory stays bounded."""

    def __init__(self, stream: BinaryIO, base: int) -> None:
        self.stream, self.base, self.buf = stream, base, bytearray()

    def read(self, pos: int, n: int) -> bytes:
        while self.base + len(self.buf) < pos:
            chunk = self.stream.read(1 << 20)
            if not chunk:
                break
            self.buf += chunk
        drop = min(max(0, pos - self.base), len(self.buf))
        del self.buf[:drop]
        self.base += drop
        while len(self.buf) < n:
            chunk = self.stream.read(max(n - len(self.buf), 1 << 20))
            if not chunk:
                break
            self.buf += chunk
        return bytes(self.buf[:n])


def _resync(win: _Window, start: int) -> int | None:
    """The next position at or after ``start`` where a record's magic appears."""
    pos = start
    while True:
        chunk = win.read(pos, 1 << 20)
        if len(chunk) < len(RECORD_MAGIC):
            return None
        at = chunk.find(RECORD_MAGIC)
        if at >= 0:
            return pos + at
        pos += len(chunk) - len(RECORD_MAGIC) + 1


PLAIN = Codec(CodecSpec())


def read_volume(
    device: Device, label: str, name: str, found: dict[str, SetFound], codec: Codec = PLAIN
) -> None:
    """Read one volume front to back into ``found``; damage is noted, never raised.

    After a damaged record header the reader searches forward for the next intact
    header (its CRC proves it), so one bad byte costs one record, not the volume's rest.
    """
    with device.open_read(name) as stream:
        head = read_volume_header(stream)
        meta, volume_id = codec.open_header_meta(head.meta, head.set_id, head.label, name)
        place_label = label_bytes(label)
        set_hex = head.set_id.hex()
        entry = found.get(set_hex)
        if entry is None:
            entry = found[set_hex] = SetFound(set_hex, meta, head.created_ns)
        entry.created_ns = min(entry.created_ns, head.created_ns)
        entry.labels.add(label)
        entry.volumes += 1
        win = _Window(stream, head.length)
        pos, count, lost = head.length, 0, False

        def damage(error: str, **extra: str) -> None:
            entry.damaged.append({"volume": name, "error": error, **extra})

        while True:
            fixed = win.read(pos, RECORD_FIXED_SIZE)
            if not fixed:
                damage("volume ends without its end record (cut short)")
                return
            try:
                header = decode_record_header(
                    fixed, lambda n, at=pos: win.read(at + RECORD_FIXED_SIZE, n)
                )
            except FormatError as exc:
                if len(fixed) < RECORD_FIXED_SIZE:
                    damage("volume is cut short inside a record header")
                    return
                damage(f"at byte {pos}: {exc}; skipped to the next intact record")
                lost = True
                nxt = _resync(win, pos + 1)
                if nxt is None:
                    damage("no intact record after the damage; the volume has no end record")
                    return
                pos = nxt
                continue
            if header.kind == "end":
                if header.file_size != count or lost:
                    damage(f"end record counts {header.file_size} records, {count} were read")
                else:
                    entry.closed += 1
                    entry.closed_names.add((label, name))
                return
            length = record_length(header)
            stored = header.stored_size
            payload = win.read(pos + length - stored, stored) if stored else b""
            if len(payload) != stored:
                damage("last record is cut short")
                return
            if header.set_id != head.set_id:
                damage(f"record at {pos} belongs to another set")
            elif "sealed" in head.meta and not header.flags & FLAG_SEALED:
                damage(f"record at {pos} of an encrypted volume is not sealed")
            else:
                opened = _open_record(codec, header, payload, Place(place_label, volume_id), pos)
                if isinstance(opened, str):
                    damage(opened, path=os.fsdecode(header.path))
                elif opened.kind == "meta":
                    try:
                        xattrs.decode(opened.data)
                        entry.metas[header.file_id] = bytes(opened.data)
                    except FormatError as exc:
                        damage(f"at byte {pos}: {exc}", path=os.fsdecode(opened.path))
                else:
                    _add_record(entry, opened.header, label, name, pos, length - stored)
            pos += length
            count += 1


@dataclass
class _Opened:
    header: RecordHeader
    data: bytes | memoryview

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def path(self) -> str:
        return os.fsdecode(self.header.path)


def _open_record(
    codec: Codec, header: RecordHeader, payload: bytes | memoryview, place: Place, pos: int
) -> _Opened | str:
    """The record's header (names unsealed) and plain payload, or what is wrong with it."""
    try:
        sealed, data = codec.open_record(header, payload, place, f"record at {pos}")
    except FormatError as exc:
        return str(exc)
    if sealed is not None:
        header = replace(
            header,
            mode=sealed.mode,
            uid=sealed.uid,
            gid=sealed.gid,
            mtime_ns=sealed.mtime_ns,
            path=sealed.path,
            link=sealed.link,
        )
    return _Opened(header, data)


def _add_record(
    entry: SetFound, header, label: str, volume: str, position: int, header_size: int
) -> None:
    kind = Kind(header.kind)
    known = entry.files.get(header.file_id)
    size = header.file_size if known is None else max(known.size, header.file_size)
    entry.files[header.file_id] = FileEntry(
        path=os.fsdecode(header.path),
        kind=kind,
        size=size if kind is Kind.FILE else 0,
        mode=header.mode,
        mtime_ns=header.mtime_ns,
        uid=header.uid,
        gid=header.gid,
        link=os.fsdecode(header.link),
    )
    entry.records.append(
        (
            header.file_id,
            RecordRef(
                label,
                volume,
                position,
                header_size,
                header.offset,
                header.size,
                header.checksum,
                stored=header.stored,
            ),
        )
    )


def scan_device(dev: OpenDevice, found: dict[str, SetFound], codec: Codec = PLAIN) -> dict:
    """Read every volume on one device; a summary for the report."""
    names = sorted(o.name for o in dev.device.list("sets/") if o.name.endswith(".pbv"))
    for name in names:
        try:
            read_volume(dev.device, dev.label.label, name, found, codec)
        except (DeviceError, FormatError) as exc:
            # a volume whose header is unreadable cannot be attributed to a set
            found.setdefault("", SetFound("", {}, 0)).damaged.append(
                {"volume": name, "device": dev.url, "error": str(exc)}
            )
    return {"url": dev.url, "label": dev.label.label, "volumes": len(names)}


def device_keys(alive: list[OpenDevice]) -> list[KeyFile]:
    """The copies of the key file the devices carry (``keys/*.json``), each different
    one once (a device away when a passphrase was added or removed keeps an older
    copy); empty for devices of plain sets. Two different keys are a UsageError (one
    catalog has one key)."""
    found: dict[bytes, dict[bytes, KeyFile]] = {}
    for dev in alive:
        try:
            names = [o.name for o in dev.device.list("keys/") if o.name.endswith(".json")]
            for name in names:
                with dev.device.open_read(name) as stream:
                    data = stream.read(MAX_KEY_FILE + 1)
                    keyfile = KeyFile.from_json(data, f"{dev.url}: {name}")
                found.setdefault(keyfile.key_id, {}).setdefault(keyfile.to_json(), keyfile)
        except DeviceError as exc:
            raise KeyUnlockError(f"{dev.url}: cannot read its key file: {exc}") from exc
    if len(found) > 1:
        raise UsageError("the devices carry more than one key; rebuild them one key at a time")
    return [k for copies in found.values() for k in copies.values()]
