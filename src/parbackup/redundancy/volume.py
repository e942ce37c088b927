"""The parity volume format (docs/FORMAT.md, "Parity volumes").

A parity volume is an object of its own on a parity device, named
``sets/<set>/<label12>-p<index>.pbp``; it changes nothing in data volumes or record
headers. Layout, all integers little-endian:

    volume header   "PBKP", version u16, flags u16, header length u32, set id 16,
                    device label 16, parity index u16, created ns i64,
                    JSON (set, codec, k, m, unit, rows, columns: [{label, volumes:
                    [[name, size], ...]}], parity: [labels]), CRC32 of all before it
    row record *    "PBKQ", version u16, codec u8, k u8, m u8, index u8, set id 16,
                    row u64, unit u32, header length u32,
                    (k+m) BLAKE3 digests of the row's units (data 0..k-1, parity k..),
                    (k+m) codec fragment headers (80 bytes each), CRC32;
                    then the parity unit (``unit`` bytes)
    end record      "PBKZ", set id 16, rows u64, CRC32

Version 2 (parity written while the data is, engine/paritystream.py) cannot know the
columns' volumes nor the row count when it writes its header: its header JSON lists
the columns' labels with no volumes and ``rows`` null, row records carry version 2,
and the end record carries what the header could not:

    end record v2   "PBKZ", set id 16, rows u64, JSON length u32,
                    JSON ({columns: [{label, volumes: [[name, size], ...]}]}), CRC32,
                    then the end record's length u32 and "PBKE" (found from the end)

``complete_header`` reads it from the end of the volume and fills the header in.

Version 3 (written by default since session 5) is version 2 with XXH3-128 unit digests
(16 bytes) in place of BLAKE3 (32 bytes): its header JSON says so (``"checksum":
"xxh3-128"``) and its row records carry version 3, whose length counts 16-byte digests.
A unit digest only *locates* a damaged unit; what a restore trusts is each data record's
own checksum (and AEAD tag), so a non-cryptographic check is enough here and ~4x cheaper.

Every row record describes itself (set, row, codec, k, m, unit) and holds the digest of
every unit of its row, so a damaged data unit is found by its digest even when the data
record headers around it are garbage. Readers check every length before allocating.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, replace
from typing import BinaryIO

import xxhash
from blake3 import blake3

from parbackup.errors import ChecksumError, FormatError
from parbackup.format import Frame, read_exact
from parbackup.redundancy.codec import CODEC_IDS, CODEC_NAMES, FRAGMENT_HEADER, check_params
from parbackup.redundancy.layout import Column

PARITY_MAGIC = b"PBKP"
ROW_MAGIC = b"PBKQ"
END_MAGIC = b"PBKZ"
PARITY_VERSION = 1
STREAMED_VERSION = 2
XXH3_VERSION = 3
VERSIONS = (PARITY_VERSION, STREAMED_VERSION, XXH3_VERSION)
STREAMED = (STREAMED_VERSION, XXH3_VERSION)
"""Versions laid out as written while the data is (header without rows/volumes)."""
WRITTEN_VERSION = XXH3_VERSION
"""The version a backup writes its parity volumes in."""
CHECKS = {PARITY_VERSION: "blake3", STREAMED_VERSION: "blake3", XXH3_VERSION: "xxh3-128"}
"""The unit-digest algorithm of each version (named in a version-3 header's JSON)."""
FOOT_MAGIC = b"PBKE"
MAX_META = 16 << 20
MAX_UNIT = 64 << 20
DIGEST_SIZES = {"blake3": 32, "xxh3-128": 16}

_HEAD = struct.Struct("<4sHHI16s16sHq")
_ROW = struct.Struct("<4sHBBBB16sQII")
_END = struct.Struct("<4s16sQ")
_END2 = struct.Struct("<4s16sQI")
_FOOT = struct.Struct("<I4s")
_CRC = struct.Struct("<I")
_FRAME = Frame(
    _HEAD, PARITY_MAGIC, VERSIONS, MAX_META, "parity volume", "unsupported parity volume version"
)


def parity_name(set_hex: str, label: str, index: int) -> str:
    """Where parity volume ``index`` of a set lies on its device."""
    return f"sets/{set_hex}/{label[:12]}-p{index}.pbp"


def unit_digest(data: bytes | bytearray | memoryview, version: int) -> bytes:
    """The digest a row record of a ``version`` volume keeps of one unit (BLAKE3, 32
    bytes, in versions 1 and 2; XXH3-128, 16 bytes, in version 3)."""
    if version == XXH3_VERSION:
        return xxhash.xxh3_128_digest(data)
    return blake3(data, max_threads=blake3.AUTO).digest()


def digest_size(version: int) -> int:
    """Bytes of one unit digest in a row record of a ``version`` volume."""
    return DIGEST_SIZES[CHECKS[version]]


@dataclass(frozen=True, slots=True)
class ParityHeader:
    """What a parity volume says about the stripe it belongs to."""

    set_id: bytes
    label: str
    index: int
    codec: str
    k: int
    m: int
    unit: int
    rows: int
    columns: tuple[Column, ...]
    parity: tuple[str, ...]
    created_ns: int = 0
    length: int = 0
    version: int = PARITY_VERSION

    def encode(self) -> bytes:
        streamed = self.version in STREAMED
        meta = {
            "set": self.set_id.hex(),
            "codec": self.codec,
            "k": self.k,
            "m": self.m,
            "unit": self.unit,
            "rows": None if streamed else self.rows,
            "columns": [
                Column(c.label, ()).to_json() if streamed else c.to_json() for c in self.columns
            ],
            "parity": list(self.parity),
        }
        if self.version >= XXH3_VERSION:
            meta["checksum"] = CHECKS[self.version]
        label = bytes.fromhex(self.label)[:16].ljust(16, b"\0")
        fields = (self.set_id, label, self.index, self.created_ns)
        return _FRAME.encode(self.version, fields, meta)


def read_parity_header(stream: BinaryIO) -> ParityHeader:
    """Read and check a parity volume header at the current position of ``stream``."""
    version, length, fields, blob = _FRAME.read(stream)
    set_id, _label, index, created = fields
    try:
        meta = json.loads(blob)
        header = ParityHeader(
            set_id=set_id,
            label=str(meta["parity"][index]),
            index=index,
            codec=str(meta["codec"]),
            k=int(meta["k"]),
            m=int(meta["m"]),
            unit=int(meta["unit"]),
            rows=0 if version in STREAMED else int(meta["rows"]),
            columns=tuple(Column.from_json(c) for c in meta["columns"]),
            parity=tuple(str(p) for p in meta["parity"]),
            created_ns=created,
            length=length,
            version=version,
        )
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise FormatError("parity volume metadata is malformed") from exc
    if meta.get("set") != set_id.hex() or header.codec not in CODEC_IDS:
        raise FormatError("parity volume metadata does not match its header")
    if version >= XXH3_VERSION and meta.get("checksum") != CHECKS[version]:
        raise FormatError(
            f"parity volume names unit check {meta.get('checksum')!r}, not the one of its version"
        )
    check_params(header.k, header.m)
    if len(header.columns) != header.k or len(header.parity) != header.m:
        raise FormatError("parity volume lists the wrong number of columns")
    if not 0 < header.unit <= MAX_UNIT:
        raise FormatError("parity unit size is out of range")
    return header


@dataclass(frozen=True, slots=True)
class RowRecord:
    """One row record's header: the row, its parameters and the digests of its units."""

    set_id: bytes
    row: int
    codec: str
    k: int
    m: int
    index: int
    unit: int
    digests: tuple[bytes, ...]
    fragments: tuple[bytes, ...]


def row_record_size(k: int, m: int, version: int) -> int:
    """Bytes of one row record's header in a ``version`` volume (every row record of a
    volume has this size, so row j's record starts at header length + j * (this +
    unit))."""
    return _ROW.size + (k + m) * (digest_size(version) + FRAGMENT_HEADER) + _CRC.size


def header_from_info(set_hex: str, info: dict, index: int = 0) -> ParityHeader:
    """The parity header of volume ``index`` as the catalog remembers the stripe
    (``Catalog.set_parity``: engine/parity.py writes what this reads)."""
    try:
        return ParityHeader(
            set_id=bytes.fromhex(set_hex),
            label=str(info["parity"][index]["label"]),
            index=index,
            codec=str(info["codec"]),
            k=int(info["k"]),
            m=int(info["m"]),
            unit=int(info["unit"]),
            rows=int(info["rows"]),
            columns=tuple(Column.from_json(c) for c in info["volumes"]),
            parity=tuple(str(p["label"]) for p in info["parity"]),
            created_ns=int(info.get("created_ns", 0)),
            version=int(info.get("version", PARITY_VERSION)),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FormatError("the catalog's parity record is malformed") from exc


def encode_row(rec: RowRecord, version: int = PARITY_VERSION) -> bytes:
    """A row record's header as bytes (the parity unit follows it); ``version`` is
    its volume's."""
    length = row_record_size(rec.k, rec.m, version)
    if any(len(d) != digest_size(version) for d in rec.digests):
        raise FormatError(f"unit digests of the wrong size for a version-{version} row")
    body = (
        _ROW.pack(
            ROW_MAGIC,
            version,
            CODEC_IDS[rec.codec],
            rec.k,
            rec.m,
            rec.index,
            rec.set_id,
            rec.row,
            rec.unit,
            length,
        )
        + b"".join(rec.digests)
        + b"".join(rec.fragments)
    )
    return body + _CRC.pack(zlib.crc32(body))


def encode_end(set_id: bytes, rows: int) -> bytes:
    """The closing record: a volume without it was cut short."""
    body = _END.pack(END_MAGIC, set_id, rows)
    return body + _CRC.pack(zlib.crc32(body))


def encode_end_streamed(set_id: bytes, rows: int, columns: tuple[Column, ...]) -> bytes:
    """The closing record of a version-2 volume: the rows and the columns' volumes,
    then its own length and ``FOOT_MAGIC`` so that it can be found from the end."""
    blob = json.dumps({"columns": [c.to_json() for c in columns]}, sort_keys=True).encode()
    body = _END2.pack(END_MAGIC, set_id, rows, len(blob)) + blob
    body += _CRC.pack(zlib.crc32(body))
    return body + _FOOT.pack(len(body), FOOT_MAGIC)


def end_of(header: ParityHeader) -> bytes:
    """The closing record of a volume of ``header``'s version (rows, columns known)."""
    if header.version in STREAMED:
        return encode_end_streamed(header.set_id, header.rows, header.columns)
    return encode_end(header.set_id, header.rows)


def _parse_end_streamed(body: bytes, header: ParityHeader) -> tuple[int, tuple[Column, ...]]:
    """(rows, columns) of a version-2 end record (``body`` without its footer)."""
    if len(body) < _END2.size + _CRC.size or body[:4] != END_MAGIC:
        raise FormatError("bad parity end record")
    if zlib.crc32(body[: -_CRC.size]) != _CRC.unpack(body[-_CRC.size :])[0]:
        raise FormatError("parity end record checksum mismatch")
    _m, set_id, rows, n = _END2.unpack(body[: _END2.size])
    if set_id != header.set_id or _END2.size + n + _CRC.size != len(body):
        raise FormatError("parity end record does not match its volume")
    try:
        meta = json.loads(body[_END2.size : _END2.size + n])
        columns = tuple(Column.from_json(c) for c in meta["columns"])
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise FormatError("parity end record metadata is malformed") from exc
    if [c.label for c in columns] != [c.label for c in header.columns]:
        raise FormatError("parity end record names other columns than its header")
    return rows, columns


def complete_header(store: object, name: str, header: ParityHeader) -> ParityHeader:
    """A version-2 header with the rows and the columns' volumes its end record keeps
    (read from the end of the volume: ``store`` has ``size`` and ``read``); a version-1
    header as it is."""
    if header.version not in STREAMED:
        return header
    size = store.size(name)  # type: ignore[attr-defined]
    if size < header.length + _FOOT.size:
        raise FormatError("unexpected end of parity volume")
    length, magic = _FOOT.unpack(store.read(name, size - _FOOT.size, _FOOT.size))  # type: ignore[attr-defined]
    if magic != FOOT_MAGIC or not _END2.size < length <= size - header.length - _FOOT.size:
        raise FormatError("parity volume has no end record (cut short?)")
    if length > _END2.size + MAX_META + _CRC.size:
        raise FormatError("parity end record length is out of range")
    body = store.read(name, size - _FOOT.size - length, length)  # type: ignore[attr-defined]
    rows, columns = _parse_end_streamed(body, header)
    step = row_record_size(header.k, header.m, header.version) + header.unit
    if header.length + rows * step + length + _FOOT.size != size:
        raise FormatError("parity volume size does not match its row count")
    return replace(header, rows=rows, columns=columns)


def read_row(stream: BinaryIO, header: ParityHeader) -> tuple[RowRecord, bytes] | None:
    """The next row record and its parity unit, or None at the end record (checked)."""
    magic = _exact(stream, 4)
    if magic == END_MAGIC and header.version in STREAMED:
        fixed = magic + _exact(stream, _END2.size - 4)
        n = _END2.unpack(fixed)[3]
        if n > MAX_META:
            raise FormatError("parity end record length is out of range")
        body = fixed + _exact(stream, n + _CRC.size)
        rows, _columns = _parse_end_streamed(body, header)
        length, foot = _FOOT.unpack(_exact(stream, _FOOT.size))
        if rows != header.rows or foot != FOOT_MAGIC or length != len(body):
            raise FormatError("parity end record does not match its volume")
        return None
    if magic == END_MAGIC:
        rest = _exact(stream, _END.size - 4 + _CRC.size)
        body = magic + rest[: -_CRC.size]
        if zlib.crc32(body) != _CRC.unpack(rest[-_CRC.size :])[0]:
            raise FormatError("parity end record checksum mismatch")
        _m, set_id, rows = _END.unpack(body)
        if set_id != header.set_id or rows != header.rows:
            raise FormatError("parity end record does not match its volume")
        return None
    if magic != ROW_MAGIC:
        raise FormatError(f"bad parity row magic {magic!r}")
    fixed = magic + _exact(stream, _ROW.size - 4)
    length = _row_fixed(fixed, header)
    rec = parse_row_record(fixed + _exact(stream, length - _ROW.size), header)
    payload = _exact(stream, header.unit)
    if unit_digest(payload, header.version) != rec.digests[header.k + header.index]:
        raise ChecksumError(f"parity unit of row {rec.row} does not match its digest")
    return rec, payload


def parse_row_record(blob: bytes, header: ParityHeader) -> RowRecord:
    """A row record's header from its ``row_record_size`` bytes, checked (magic, the
    volume's parameters, CRC). Its parity unit, which follows it, is not checked here:
    a reader at random (devices/decoded.py) reads record and unit in one read and
    checks the unit's digest only where the row it decodes comes out wrong."""
    fixed = blob[: _ROW.size]
    if len(fixed) != _ROW.size or fixed[:4] != ROW_MAGIC:
        raise FormatError(f"bad parity row magic {bytes(fixed[:4])!r}")
    if _row_fixed(fixed, header) != len(blob):
        raise FormatError("parity row record does not match its volume")
    _mg, version, codec, k, m, index, set_id, row, unit, _length = _ROW.unpack(fixed)
    rest = blob[_ROW.size :]
    if zlib.crc32(blob[: -_CRC.size]) != _CRC.unpack(rest[-_CRC.size :])[0]:
        raise FormatError("parity row record checksum mismatch")
    size, n = digest_size(version), k + m
    digests = tuple(rest[i * size : (i + 1) * size] for i in range(n))
    base = n * size
    frags = tuple(
        rest[base + i * FRAGMENT_HEADER : base + (i + 1) * FRAGMENT_HEADER] for i in range(n)
    )
    return RowRecord(set_id, row, CODEC_NAMES[codec], k, m, index, unit, digests, frags)


def _row_fixed(fixed: bytes, header: ParityHeader) -> int:
    """The length a row record's fixed part gives, once it is checked against the
    volume's parameters (FormatError if they differ)."""
    _mg, version, codec, k, m, index, set_id, _row, unit, length = _ROW.unpack(fixed)
    if (
        CHECKS.get(version) != CHECKS[header.version]
        or codec not in CODEC_NAMES
        or (k, m, unit, index, set_id)
        != (header.k, header.m, header.unit, header.index, header.set_id)
        or length != row_record_size(k, m, version)
    ):
        raise FormatError("parity row record does not match its volume")
    return length


def _exact(stream: BinaryIO, n: int) -> bytes:
    return read_exact(stream, n, "parity volume")
