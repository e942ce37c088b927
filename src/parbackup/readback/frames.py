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
    decode_record_header,
    end_record,
    parse_record_header,
    read_volume_header,
    record_length,
)
from parbackup.model import RecordRef

_END_SIZE = len(end_record(bytes(16), 0).encode())
_SPAN = 16 << 20
_PLAIN = Codec(CodecSpec())


@dataclass(frozen=True)
class FrameDamage:
    """Something wrong in a volume; ``file`` is the file id it hits, or None. ``cut``:
    bytes missing at the volume's end (a cut tail), not bytes changed."""

    volume: str
    file: int | None
    error: str
    cut: bool = False


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
    metas = 0
    last_fid: int | None = None
    empties: list[tuple[int, RecordRef]] = []
    for fid, ref in refs:
        if ref.position > at and last_fid is not None:  # the last file's xattrs, maybe
            found, at = _meta_records(device, set_id, volume, at, last_fid, codec, place, out)
            metas += found
        if ref.position != at:
            out.append(_misplaced(device, volume, at, ref.position, fid, last_fid))
        at = ref.position + ref.header_size + ref.length
        last_fid = fid
        if ref.size == 0:
            empties.append((fid, ref))
    out.extend(_check_empties(device, set_id, volume, empties, codec, place))
    if not expect_end:
        return out
    if last_fid is not None:
        found, at = _meta_records(device, set_id, volume, at, last_fid, codec, place, out)
        metas += found
    tail = device.read(volume, at, _END_SIZE + 1)
    if len(tail) != _END_SIZE:
        what = "cut short" if len(tail) < _END_SIZE else "longer than its end record"
        out.append(FrameDamage(volume, None, f"volume is {what}", len(tail) < _END_SIZE))
        return out
    try:
        end = parse_record_header(tail)
    except FormatError as exc:
        out.append(FrameDamage(volume, None, f"damaged end record: {exc}"))
        return out
    if end.kind != "end" or end.set_id != set_id or end.file_size != len(refs) + metas:
        out.append(FrameDamage(volume, None, "end record does not match the catalog"))
    return out


def _misplaced(
    device: Device, volume: str, at: int, position: int, fid: int, last_fid: int | None
) -> FrameDamage:
    """The record of ``fid`` is not at ``at``, where those before it ended. When the
    volume ends between the two, what lay there (the metadata records of ``last_fid``,
    which the catalog does not list) went with a cut tail: ``cut``, of that entry, whose
    attributes the catalog keeps. Otherwise the volume and the catalog disagree."""
    gap = position - at
    if last_fid is not None and gap > 0 and len(device.read(volume, at, gap)) < gap:
        return FrameDamage(
            volume, last_fid, f"{volume} at {at}: metadata record is cut short", True
        )
    return FrameDamage(volume, fid, f"record expected at {at}, catalog says {position}")


def _meta_records(
    device: Device,
    set_id: bytes,
    volume: str,
    at: int,
    fid: int,
    codec: Codec,
    place: Place,
    out: list[FrameDamage],
) -> tuple[int, int]:
    """The metadata records (kind 8: a file's extended attributes) at ``at``, which the
    mover writes right after the records of the file ``fid`` and the catalog does not
    list (it keeps the attributes with the file): each is checked (header, set, file,
    payload checksum or authentication) and counted. Returns (records, position after
    them); damage found goes into ``out``."""
    found = 0
    while True:
        head = device.read(volume, at, RECORD_FIXED_SIZE)
        if len(head) < RECORD_FIXED_SIZE:
            return found, at
        try:
            header = decode_record_header(
                head, lambda n, at=at: device.read(volume, at + RECORD_FIXED_SIZE, n)
            )
        except FormatError:
            return found, at  # not a record that starts here: the caller says what is wrong
        if header.kind != "meta":
            return found, at
        size = record_length(header)
        stored = header.stored_size
        payload = device.read(volume, at + size - stored, stored) if stored else b""
        what = f"{volume} at {at}"
        if header.set_id != set_id or header.file_id != fid:
            out.append(FrameDamage(volume, fid, f"{what}: metadata record of another file"))
        elif len(payload) != stored:
            out.append(FrameDamage(volume, fid, f"{what}: metadata record is cut short", True))
        else:
            try:
                codec.open_record(header, payload, place, what)
            except FormatError as exc:
                out.append(FrameDamage(volume, fid, f"{what}: metadata record: {exc}"))
        found += 1
        at += size


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
                out.append(FrameDamage(volume, fid, "record is cut short", True))
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
                if len(stored) != ref.length:  # a sealed envelope the volume's end cut
                    out.append(FrameDamage(volume, fid, "record is cut short", True))
                    continue
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
