"""The messages between the readback parent (readback/core.py) and its reader processes.

The conversation with one reader (readback/reader.py)::

    parent                              reader
    ReaderSpec (at start)       ──▶     opens its device, reads its label
                                ◀──     Opened(label, url) | OpenFailed(error)
    Work | None (not needed)    ──▶     reads and checks every record, feeds its sink
                                ◀──     Progress (batches) / Chunk (stream sink) /
                                        VolumeDamage (verify) ... Finished
    Credit (stream sink only)   ──▶

Everything is plain, picklable data: the same reader could run on another host. Records
travel as plain tuples (``pack``), so a reader's work pickles small.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from parbackup.crypto.codec import CodecSpec
from parbackup.frozen import maker
from parbackup.model import RecordRef
from parbackup.readback.sinks import SinkSpec

PackedRef = tuple[int, str, int, int, int, int, bytes, str, int, int]
"""(file id, volume, position, header size, offset, size, checksum, origin set, origin
file, stored): one record as a reader receives it."""


def pack(records: Iterable[tuple[int, RecordRef]]) -> list[PackedRef]:
    """Records as plain tuples (strings interned, so pickle stores each name once)."""
    return [
        (
            fid,
            sys.intern(r.volume),
            r.position,
            r.header_size,
            r.offset,
            r.size,
            r.checksum,
            sys.intern(r.origin_set),
            r.origin_file,
            r.stored,
        )
        for fid, r in records
    ]


def identity(path: bytes, mode: int, uid: int, gid: int, mtime_ns: int) -> int:
    """A CRC32 of what a record header says of its file (path, mode, owner, mtime).

    The catalog's file rows carry no checksum of their own (SQLite has none), so a
    flipped byte there would restore a file under another name, mode, owner or time
    without a word; a reader compares this value of the catalog's row with the record's
    header instead (the same values were written into both at backup time).
    """
    fixed = _FIXED(mode & 0xFFFFFFFF, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, mtime_ns)
    return _crc32(path, _crc32(fixed))


_FIXED = struct.Struct("<IIIq").pack
_crc32 = zlib.crc32


def unpack(label: str, packed: Iterable[PackedRef]) -> list[tuple[int, RecordRef]]:
    """The reverse of ``pack`` (in the reader)."""
    make = _make_ref
    return [(p[0], make(label, *p[1:])) for p in packed]


_make_ref = maker(RecordRef)  # one per record a reader reads: the fast way


@dataclass(frozen=True, slots=True)
class ReaderSpec:
    """Open ``url`` and say which device it is; one of ``labels`` is expected there."""

    url: str
    labels: frozenset[str]


@dataclass(frozen=True, slots=True)
class Opened:
    """The device is open and carries ``label``; ``url`` is its display (redacted) URL."""

    label: str
    url: str


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """The device could not be opened, or is not one the parent wants."""

    error: str


@dataclass(frozen=True, slots=True)
class Work:
    """Read and check ``records`` of set ``set_id`` and hand each payload to the sink.

    ``frames`` (verify only): every record of the set on this device, to check that the
    volumes' frames tile exactly (readback/frames.py); ``expect_end`` is False for a
    device that failed during the backup.
    """

    set_id: bytes
    records: list[PackedRef]
    sink: SinkSpec
    frames: list[PackedRef] | None = None
    expect_end: bool = True
    codec: CodecSpec | None = None
    """How the set's version-4 records are stored; its key opens encrypted ones."""
    idents: dict[int, int] | None = None
    """``identity`` of the catalog's row of each file whose own records are read here
    (not those an incremental set reuses): every such record's header must agree."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A batch of results: files whose records on this device all passed (and, for a
    directory sink, files it finished), files with a damaged record and why, payload
    bytes read since the last batch, and the size of a read starting now (the parent
    allows a slow device the time it needs for it)."""

    good: list[int]
    damaged: list[tuple[int, str]]
    nbytes: int
    reading: int = 0
    unowned: list[int] = field(default_factory=list)
    """Good files whose owner root could not give (directory sink; named by restore)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Stream sink: the checked payload of the record at ``offset`` of the file."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Credit:
    """Stream sink: the parent wrote ``n`` more chunks; the reader may send ``n`` more."""

    n: int


@dataclass(frozen=True, slots=True)
class VolumeDamage:
    """Verify: something wrong in a volume that hits no file (header, end record), or
    its tail cut (``cut``) with the payload-less or metadata record of the entry ``file``
    in it, which a restore takes from the catalog."""

    volume: str
    error: str
    file: int | None = None
    cut: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """The reader is done; every file it was given has been reported."""
