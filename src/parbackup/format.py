"""The on-device format: volumes made of records, each a header followed by its payload.

See docs/FORMAT.md for the byte layout. Everything a device holds for a backup set is
one or more volumes; a volume is written strictly front to back, so the same bytes serve
a directory, a tape, an SFTP host and an object store.

Readers never trust a length they read: every size is checked against fixed limits
before anything is allocated, and every header carries a CRC32 of itself, so garbage is
rejected with FormatError instead of crashing, hanging or allocating.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from blake3 import blake3

from parbackup.errors import ChecksumError, FormatError
from parbackup.frozen import maker
from parbackup.xattrs import MAX_META

FORMAT_VERSION = 1
VOLUME_MAGIC = b"PBKV"
RECORD_MAGIC = b"PBKR"

MAX_PAYLOAD = 64 * 1024 * 1024
"""Largest payload one record may carry; writers use CHUNK, readers accept up to this."""
CHUNK = 4 * 1024 * 1024
"""Payload size writers cut segments into, so memory per stream stays bounded (W3)."""
MAX_NAME = 65536
MAX_VOLUME_META = 1024 * 1024
SOURCES_ROOM = 3 * MAX_VOLUME_META // 4 - 16384
"""The most bytes a set's source names may take as header JSON: every volume header
carries them beside the set's other fields, sealed and in base64 (a third more) when the
set is encrypted, and a header over MAX_VOLUME_META is one no reader takes."""
MAX_FILE_SIZE = 1 << 62

KIND_CODES = {
    "file": 1,
    "dir": 2,
    "symlink": 3,
    "hardlink": 4,
    "fifo": 5,
    "socket": 6,
    "device": 7,
    "meta": 8,
}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
META = KIND_CODES["meta"]
"""Kind 8: a file's extended attributes (ACLs, capabilities, ...), payload encoded by
parbackup/xattrs.py; offset 0, size = total size = the payload's length."""
FORMAT_VERSIONS = {1: 3, 2: 7, 3: 8, 4: 8}
"""Record format version -> highest kind code it may carry. Version 2 only adds kinds
(hard links, FIFOs, sockets, device nodes): a record of one of those kinds is written as
version 2, every other record as version 1, so volumes without them stay readable by
version-1 readers, and a version-1 reader meeting a new kind stops with a clear error.
Version 3 likewise only adds kind 8 (meta): only those records carry version 3.
Version 4 (any kind) is the version-2 header plus the stored payload length, with
``flags`` saying how the payload is stored (compressed, encrypted: crypto/codec.py); it
is written only for sets with compression or encryption on."""
STORED_VERSION = 4


def record_version(code: int) -> int:
    """The format version a record of kind ``code`` is written with."""
    if code == META:
        return 3
    return 2 if 3 < code < KIND_END else FORMAT_VERSION


KIND_END = 15
"""The last record of a volume: its ``file_size`` field holds the number of records."""
_VERSIONS = tuple(record_version(code) for code in range(KIND_END + 1))
"""``record_version`` by code, looked up (one a record header written)."""

# magic, version, kind, header_len, set id, file id, offset, size, file size,
# mode, uid, gid, mtime_ns, flags, checksum, path length, link length
_RECORD = struct.Struct("<4sHHI16sQQQQIIIqI32sII")
_VOLUME = struct.Struct("<4sHHI16s16sIq")
_CRC = struct.Struct("<I")
_STORED = struct.Struct("<Q")
PLAIN_HEADER_FIXED = _RECORD.size + _CRC.size
"""Bytes of a version 1-3 record header besides its path and link: a writer that
reserves a header's room before it has the payload's digest (engine/mover.py)."""
MAX_STORED = MAX_PAYLOAD + 2 * MAX_NAME + 64
"""Largest stored payload of a version-4 record (payload, sealed metadata, tag)."""


def checksum(data: bytes | bytearray | memoryview) -> bytes:
    """The payload checksum stored in record headers (BLAKE3, 32 bytes)."""
    return blake3(data).digest()


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """What every record says about itself: enough to restore it without the catalog."""

    kind: str
    set_id: bytes
    file_id: int
    offset: int
    size: int
    file_size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    checksum: bytes
    path: bytes
    link: bytes = b""
    flags: int = 0
    """Version 4: how the payload is stored (crypto/codec.py FLAG_*)."""
    stored: int = -1
    """Version 4: bytes of payload on the device; -1 for versions 1-2 (then ``size``)."""

    @property
    def stored_size(self) -> int:
        """Bytes of payload that follow the header on the device."""
        return self.size if self.stored < 0 else self.stored

    @property
    def code(self) -> int:
        return KIND_END if self.kind == "end" else KIND_CODES[self.kind]

    def encode(self) -> bytes:
        """The header as bytes, ending in a CRC32 of everything before it."""
        fields = (
            self.code,
            self.set_id,
            self.file_id,
            self.offset,
            self.size,
            self.file_size,
            self.mode,
            self.uid,
            self.gid,
            self.mtime_ns,
            self.checksum,
            self.path,
            self.link,
        )
        if self.stored >= 0:
            return encode_record_header(*fields, self.flags, self.stored)
        return encode_record_header(*fields)


def encode_record_header(
    code: int,
    set_id: bytes,
    file_id: int,
    offset: int,
    size: int,
    file_size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime_ns: int,
    digest: bytes,
    path: bytes,
    link: bytes,
    flags: int = 0,
    stored: int = -1,
) -> bytes:
    """``RecordHeader(...).encode()`` without building the dataclass (the writer's hot
    path: one call per record). ``code`` is a KIND_CODES value or KIND_END. With
    ``stored`` >= 0 the header is version 4: ``size`` source bytes stored as ``stored``
    bytes, ``flags`` saying how (crypto/codec.py); else version 1-3, as before."""
    if len(path) > MAX_NAME or len(link) > MAX_NAME:  # read_record would refuse it
        raise FormatError("record names are too long")
    if stored < 0:
        extra, version = b"", _VERSIONS[code]
    else:
        extra, version = _STORED.pack(stored), STORED_VERSION
    body = b"".join((
        _RECORD.pack(
            RECORD_MAGIC,
            version,
            code,
            PLAIN_HEADER_FIXED + len(extra) + len(path) + len(link),
            set_id,
            file_id,
            offset,
            size,
            file_size,
            mode,
            uid & 0xFFFFFFFF,
            gid & 0xFFFFFFFF,
            mtime_ns,
            flags,
            digest,
            len(path),
            len(link),
        ),
        extra,
        path,
        link,
    ))  # fmt: skip
    return body + _CRC.pack(zlib.crc32(body))


_make_header = maker(RecordHeader)  # one per record a reader checks: the fast way


def _check_fixed(fields: tuple) -> tuple[int, int, int]:
    """Check a record header's fixed part (``_RECORD``'s fields); (code, length, extra):
    its kind code, whole length and bytes of stored size after the fixed part."""
    (magic, version, code, length, _set_id, _file_id, offset, size, file_size) = fields[:9]
    path_len, link_len = fields[15], fields[16]
    if magic != RECORD_MAGIC:
        raise FormatError(f"bad record magic {magic!r}")
    if version not in FORMAT_VERSIONS:
        raise FormatError(f"unsupported record format version {version}")
    if code != KIND_END and not 0 < code <= FORMAT_VERSIONS[version]:
        raise FormatError(f"unknown record kind {code} (format version {version})")
    if path_len > MAX_NAME or link_len > MAX_NAME:
        raise FormatError("record names are too long")
    extra = _STORED.size if version == STORED_VERSION else 0
    if length != _RECORD.size + extra + path_len + link_len + _CRC.size:
        raise FormatError("record header length does not add up")
    if code != KIND_END and (size > MAX_PAYLOAD or file_size > MAX_FILE_SIZE):
        raise FormatError("record sizes are out of range")
    if code == KIND_END and (size or offset or path_len or link_len):
        raise FormatError("malformed volume end record")
    if code == META and (offset or size != file_size or size > MAX_META or link_len):
        raise FormatError("malformed metadata record")
    return code, length, extra


def _header(fields: tuple, code: int, extra: int, tail: bytes | memoryview) -> RecordHeader:
    """The header of checked ``fields`` (its CRC matched); ``tail``: the bytes between
    the fixed part and the CRC (stored size, path, link)."""
    (offset, size, file_size, mode, uid, gid, mtime_ns, flags, digest, path_len) = fields[6:16]
    if code != KIND_END and (offset + size > file_size):
        raise FormatError("record extends past the end of its file")
    stored = -1
    if extra:
        (stored,) = _STORED.unpack_from(tail)
        if stored > MAX_STORED:
            raise FormatError("record stored size is out of range")
    elif flags:
        raise FormatError(f"record flags {flags:#x} in a version-{fields[1]} record")
    return _make_header(
        "end" if code == KIND_END else KIND_NAMES[code],
        fields[4],
        fields[5],
        offset,
        size,
        file_size,
        mode,
        uid,
        gid,
        mtime_ns,
        digest,
        bytes(tail[extra : extra + path_len]),
        bytes(tail[extra + path_len :]),
        flags if extra else 0,
        stored,
    )


def decode_record_header(head: bytes, read_more: Callable[[int], bytes]) -> RecordHeader:
    """Parse a record header whose first ``_RECORD.size`` bytes are ``head``.

    ``read_more(n)`` must return exactly n further bytes (or fewer at end of data).
    """
    if len(head) < _RECORD.size:
        raise FormatError("truncated record header")
    fields = _RECORD.unpack_from(head)
    code, length, extra = _check_fixed(fields)
    rest = read_more(length - _RECORD.size)
    if len(rest) != length - _RECORD.size:
        raise FormatError("truncated record header")
    (crc,) = _CRC.unpack_from(rest, len(rest) - _CRC.size)
    if zlib.crc32(rest[: -_CRC.size], zlib.crc32(head[: _RECORD.size])) != crc:
        raise FormatError("record header checksum mismatch")
    return _header(fields, code, extra, rest[: -_CRC.size])


RECORD_FIXED_SIZE = _RECORD.size


def parse_record_header(data: bytes | memoryview) -> RecordHeader:
    """Parse a complete header held at the start of ``data`` (as read from the catalog's
    position): the same checks as ``decode_record_header``, no bytes copied but the names
    (a reader's per-record path)."""
    if len(data) < _RECORD.size:
        raise FormatError("truncated record header")
    fields = _RECORD.unpack_from(data)
    code, length, extra = _check_fixed(fields)
    if len(data) < length:
        raise FormatError("truncated record header")
    view = memoryview(data)
    (crc,) = _CRC.unpack_from(view, length - _CRC.size)
    if zlib.crc32(view[: length - _CRC.size]) != crc:
        raise FormatError("record header checksum mismatch")
    return _header(fields, code, extra, view[_RECORD.size : length - _CRC.size])


def end_record(set_id: bytes, records: int) -> RecordHeader:
    """The closing record of a volume; it lets a reader tell a whole volume from a cut one."""
    return RecordHeader("end", set_id, 0, 0, 0, records, 0, 0, 0, 0, bytes(32), b"")


@dataclass(frozen=True, slots=True)
class VolumeHeader:
    """The first bytes of a volume: which set and device it belongs to, plus set metadata."""

    set_id: bytes
    label: bytes
    sequence: int
    created_ns: int
    meta: dict
    length: int = 0
    """Bytes the header takes on the device (set when read; the first record follows)."""

    def encode(self) -> bytes:
        """The volume header as bytes: fixed part, JSON metadata, CRC32."""
        fields = (self.set_id, self.label, self.sequence, self.created_ns)
        return VOLUME_FRAME.encode(FORMAT_VERSION, fields, self.meta)


@dataclass(frozen=True)
class Frame:
    """How a volume's or a parity volume's header is framed: the fixed part ``head``
    (``magic``, version, flags 0, the header's length, then fields of the kind's own),
    metadata as JSON (at most ``max_meta`` bytes), and a CRC32 of both. ``what`` names
    the kind in errors; ``unsupported`` starts the error for a version not in
    ``versions``."""

    head: struct.Struct
    magic: bytes
    versions: tuple[int, ...]
    max_meta: int
    what: str
    unsupported: str

    def encode(self, version: int, fields: tuple, meta: dict) -> bytes:
        """The header as bytes; FormatError rather than a header ``read`` would refuse."""
        blob = json.dumps(meta, sort_keys=True).encode()
        if len(blob) > self.max_meta:
            raise FormatError(
                f"{self.what} header metadata takes {len(blob)} bytes, over {self.max_meta}"
            )
        length = self.head.size + len(blob) + _CRC.size
        body = self.head.pack(self.magic, version, 0, length, *fields) + blob
        return body + _CRC.pack(zlib.crc32(body))

    def read(self, stream: BinaryIO) -> tuple[int, int, tuple, bytes]:
        """Read and check a header at the current position of ``stream``: its magic,
        version, length and CRC32. The version, the header's length, the kind's fields
        and the JSON bytes."""
        head, what = self.head, self.what
        fixed = read_exact(stream, head.size, what)
        found, version, _flags, length, *fields = head.unpack(fixed)
        if found != self.magic:
            raise FormatError(f"not a parbackup {what} (magic {found!r})")
        if version not in self.versions:
            raise FormatError(f"{self.unsupported} {version}")
        if not head.size + _CRC.size <= length <= head.size + self.max_meta + _CRC.size:
            raise FormatError(f"{what} header length is out of range")
        rest = read_exact(stream, length - head.size, what)
        body = fixed + rest[: -_CRC.size]
        (crc,) = _CRC.unpack(rest[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise FormatError(f"{what} header checksum mismatch")
        return version, length, tuple(fields), rest[: -_CRC.size]


VOLUME_FRAME = Frame(
    _VOLUME,
    VOLUME_MAGIC,
    (FORMAT_VERSION,),
    MAX_VOLUME_META,
    "volume",
    "unsupported volume format version",
)


def read_volume_header(stream: BinaryIO) -> VolumeHeader:
    """Read and check the volume header at the current position of ``stream``."""
    _version, length, fields, blob = VOLUME_FRAME.read(stream)
    set_id, label, sequence, created = fields
    try:
        meta = json.loads(blob)
    except (ValueError, RecursionError) as exc:
        raise FormatError("volume metadata is not valid JSON") from exc
    if not isinstance(meta, dict):
        raise FormatError("volume metadata is not an object")
    return VolumeHeader(set_id, label, sequence, created, meta, length)


def read_exact(stream: BinaryIO, n: int, what: str = "volume") -> bytes:
    """``n`` bytes of ``stream``; FormatError ``unexpected end of WHAT`` if it ends first."""
    data = stream.read(n)
    if data is None or len(data) != n:
        raise FormatError(f"unexpected end of {what}")
    return data


def read_record(stream: BinaryIO) -> tuple[RecordHeader, bytes]:
    """Read one record (header and payload) at the current position and check it.

    The payload of a version-4 record is returned as stored (compressed, encrypted) and
    unchecked: its checksum is of the decoded payload (crypto/codec.py decodes it)."""
    head = stream.read(_RECORD.size)
    if not head:
        raise FormatError("volume ends without its end record")
    header = decode_record_header(head, lambda n: stream.read(n) or b"")
    length = header.stored_size
    payload = read_exact(stream, length) if length else b""
    if header.kind != "end" and header.stored < 0 and checksum(payload) != header.checksum:
        raise ChecksumError(f"payload checksum mismatch at offset {header.offset}")
    return header, payload


def record_length(header: RecordHeader) -> int:
    """Bytes the record takes on the device: its header plus its payload."""
    extra = _STORED.size if header.stored >= 0 else 0
    return (
        _RECORD.size + extra + len(header.path) + len(header.link) + _CRC.size
    ) + header.stored_size


def iter_volume(stream: BinaryIO, position: int) -> Iterator[tuple[int, RecordHeader, bytes]]:
    """Yield (position, header, payload) for every record after the volume header.

    ``position`` is where the first record starts (the volume header's length). Raises
    FormatError at the first damaged, truncated or missing record, after yielding every
    good record before it; a volume without its end record is reported as cut short.
    """
    count = 0
    while True:
        header, payload = read_record(stream)
        if header.kind == "end":
            if header.file_size != count:
                raise FormatError(
                    f"volume end record counts {header.file_size} records, found {count}"
                )
            return
        yield position, header, payload
        count += 1
        position += record_length(header)


def new_set_id() -> bytes:
    """A fresh 16-byte backup set id."""
    return uuid.uuid4().bytes
