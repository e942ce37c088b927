"""Checking the frame of every volume of a set, not only the payload records.

The reader checks each payload record against the catalog and its checksum. That leaves
bytes no restore reads: the volume header, the records of directories, links and empty
files, the end record, and anything appended after it. ``check_volumes`` reads those and
checks that the records the catalog knows tile each volume exactly (first record right
after the volume header, each next one right after the previous, the end record last,
counting them all, nothing after it). Together the two checks cover every byte of a
volume, so one flipped, cut or missing byte anywhere is found (REQUIREMENTS X3). In an
encrypted set the sealed volume metadata and the sealed envelopes of payload-less
records (names of directories, links, empty files) are authenticated too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parbackup.crypto.codec import Codec, CodecSpec, Place, label_bytes
from parbackup.devices.base import Device
from parbackup.errors import DeviceError, FormatError
from parbackup.format import (
    RECORD_FIXED_SIZE,
    checksum,
    end_record,
    parse_record_header,
    read_volume_header,
)
from parbackup.model import RecordRef

_END_SIZE = len(end_record(bytes(16), 0).encode())
_SPAN = 16 << 20
_PEEK = 64 << 10
"""Bytes read to parse a record header of unknown length (path and link included)."""
_PLAIN = Codec(CodecSpec())


@dataclass(frozen=True)
class FrameDamage:
    """Something wrong in a volume; ``file`` is the file id it hits, or None."""

    volume: str
    file: int | None
    error: str


def check_volumes(
    device: Device,
    set_id: bytes,
    records: Iterable[tuple[int, RecordRef]],
    *,
    expect_end: bool = True,
    codec: Codec = _PLAIN,
    label: str = "",
) -> list[FrameDamage]:
    """Check the frame of every volume holding ``records`` (all records of one device).

    ``expect_end`` is False for a device that failed during the backup: its volume was
    never closed, so it has no end record and may have bytes after the last durable one.
    ``codec`` (with the set's key) and the device's ``label`` open what is sealed.
    """
    place_label = label_bytes(label)
    by_volume: dict[str, list[tuple[int, RecordRef]]] = {}
    for fid, ref in records:
        by_volume.setdefault(ref.volume, []).append((fid, ref))
    out: list[FrameDamage] = []
    for volume in sorted(by_volume):
        refs = sorted(by_volume[volume], key=lambda w: w[1].position)
        try:
            out.extend(_check_volume(device, set_id, volume, refs, expect_end, codec, place_label))
        except (DeviceError, FormatError) as exc:
            out.append(FrameDamage(volume, None, str(exc)))
    return out


def _check_volume(
    device: Device,
    set_id: bytes,
    volume: str,
    refs: list[tuple[int, RecordRef]],
    expect_end: bool,
    codec: Codec,
    place_label: bytes,
) -> list[FrameDamage]:
    out: list[FrameDamage] = []
    with device.open_read(volume, 64 * 1024) as stream:
        head = read_volume_header(stream)
    if head.set_id != set_id:
        out.append(FrameDamage(volume, None, "volume belongs to another set"))
    _meta, volume_id = codec.open_header_meta(head.meta, head.set_id, head.label, volume)
    place = Place(place_label, volume_id)
    at = head.length
    empties: list[tuple[int, RecordRef]] = []
    metas = 0
    for fid, ref in refs:
        if ref.position > at:  # a file's extended attributes (no catalog reference)
            at, n = _skip_metas(device, set_id, volume, at, ref.position, out)
            metas += n
        if ref.position != at:
            out.append(
                FrameDamage(volume, fid, f"record expected at {at}, catalog says {ref.position}")
            )
        at = ref.position + ref.header_size + ref.length
        if ref.size == 0:
            empties.append((fid, ref))
    out.extend(_check_empties(device, set_id, volume, empties, codec, place))
    if not expect_end:
        return out
    at, n = _skip_metas(device, set_id, volume, at, None, out)
    metas += n
    tail = device.read(volume, at, _END_SIZE + 1)
    if len(tail) != _END_SIZE:
        what = "cut short" if len(tail) < _END_SIZE else "longer than its end record"
        out.append(FrameDamage(volume, None, f"volume is {what}"))
        return out
    try:
        end = parse_record_header(tail)
    except FormatError as exc:
        out.append(FrameDamage(volume, None, f"damaged end record: {exc}"))
        return out
    if end.kind != "end" or end.set_id != set_id or end.file_size != len(refs) + metas:
        out.append(FrameDamage(volume, None, "end record does not match the catalog"))
    return out


def _skip_metas(
    device: Device,
    set_id: bytes,
    volume: str,
    at: int,
    until: int | None,
    out: list[FrameDamage],
) -> tuple[int, int]:
    """Step over the kind-8 records (a file's extended attributes, engine/mover.py
    ``meta_record``) from ``at``: the catalog keeps their payload with the file, not a
    reference to them, so they lie between the records it knows and the end record
    counts them. Each one's header is checked (CRC, set) and a plain one's payload
    against its digest. Returns where the next record starts and how many were met.
    Before, every volume holding one was called damaged by verify."""
    met = 0
    while until is None or at < until:
        blob = device.read(volume, at, _PEEK)
        try:
            head = parse_record_header(blob)
        except (FormatError, ValueError, KeyError):
            break
        if head.kind != "meta" or head.set_id != set_id:
            break
        size = len(head.encode())
        if head.stored < 0:
            payload = device.read(volume, at + size, head.size)
            if len(payload) != head.size or checksum(payload) != head.checksum:
                out.append(FrameDamage(volume, None, f"damaged attributes record at {at}"))
        at += size + head.stored_size
        met += 1
    return at, met


def _check_empties(
    device: Device,
    set_id: bytes,
    volume: str,
    empties: list[tuple[int, RecordRef]],
    codec: Codec,
    place: Place,
) -> list[FrameDamage]:
    """Read payload-less records (in contiguous spans) and check them: the header, and
    a sealed record's envelope (the entry's name and metadata)."""
    out: list[FrameDamage] = []
    runs: list[list[tuple[int, RecordRef]]] = []
    for fid, ref in empties:
        if runs:
            last = runs[-1][-1][1]
            touching = ref.position == last.position + last.header_size + last.length
            if touching and ref.position + ref.header_size - runs[-1][0][1].position <= _SPAN:
                runs[-1].append((fid, ref))
                continue
        runs.append([(fid, ref)])
    for run in runs:
        start = run[0][1].position
        length = run[-1][1].position + run[-1][1].header_size + run[-1][1].length - start
        data = device.read(volume, start, length)
        for fid, ref in run:
            at = ref.position - start
            head = data[at : at + ref.header_size]
            if ref.header_size < RECORD_FIXED_SIZE or len(head) != ref.header_size:
                out.append(FrameDamage(volume, fid, "record is cut short"))
                continue
            try:
                header = parse_record_header(head)
            except FormatError as exc:
                out.append(FrameDamage(volume, fid, f"damaged record header: {exc}"))
                continue
            if (header.set_id, header.file_id, header.offset, header.size) != (
                set_id,
                fid,
                ref.offset,
                0,
            ) or (header.checksum, header.stored_size) != (ref.checksum, ref.length):
                out.append(FrameDamage(volume, fid, "record does not match the catalog"))
            elif header.stored > 0:
                stored = data[at + ref.header_size : at + ref.header_size + ref.length]
                try:
                    codec.decode(
                        stored,
                        flags=header.flags,
                        set_id=header.set_id,
                        file_id=header.file_id,
                        offset=header.offset,
                        size=0,
                        file_size=header.file_size,
                        kind=header.code,
                        place=place,
                        what=f"{volume} at {ref.position}",
                    )
                except FormatError as exc:
                    out.append(FrameDamage(volume, fid, str(exc)))
    return out
