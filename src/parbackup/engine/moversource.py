"""A mover's source side: reading an item's byte range through its source (the
Source interface, sources/base.py), small whole files through the source's fast path,
and the checks that the file is still as the scan saw it.

A mixin of the mover (engine/mover.py), which holds the state it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blake3 import blake3

from parbackup.engine.messages import (
    CTIME,
    DEV,
    FID,
    FSIZE,
    INO,
    LINK,
    MTIME,
    OFF,
    PATH,
    SIZE,
    SRC,
)
from parbackup.engine.records import plain_header
from parbackup.format import PLAIN_HEADER_FIXED, checksum
from parbackup.sources.base import FileReader, Identity, Source, SourceChanged, SourceGrew
from parbackup.sources.registry import open_source

if TYPE_CHECKING:
    from parbackup.crypto.codec import Codec

SMALL = 256 * 1024
"""A file up to this size is read into a buffer of this size (one allocation for many)."""
GATHER = 1 << 20
ROOM = GATHER + SMALL + (16 << 10)
"""The mover's gather buffer's size: a write when it holds ``GATHER`` bytes, room for one
more small record (payload up to ``SMALL`` and its header) read straight into it."""
_identity = tuple.__new__
"""``Identity(...)`` without its Python-level ``__new__`` (one a small file)."""


class SourceSide:
    """Reading sources for the mover (mixed into ``_Mover``)."""

    spec: Any
    sources: dict[int, Source]
    reader: FileReader | None
    buffer: memoryview
    pending: list
    metas: list
    codec: Codec | None
    record: Any
    gather: bytearray
    gather_view: memoryview
    fill: int
    sent: int
    volume: Any
    set_id: bytes
    flush_gather: Any
    open_volume: Any

    def source(self, index: int) -> Source:
        src = self.sources.get(index)
        if src is None:
            src = self.sources[index] = open_source(self.spec.sources[index])
        return src

    def close_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def small_file(self, item: tuple, attrs: bool) -> bytes | None:
        """A whole file that fits one record, read through its source's fast path
        (``Source.read_whole``) and written; the payload of its extended attributes (b""
        when none, or when ``attrs`` is false: the item brought them). None when the
        source has no fast path or the file was not as scanned: nothing was written, and
        ``copy_range`` reads it again and says what is wrong."""
        size = item[SIZE]
        if item[OFF] or size != item[FSIZE] or size > self.spec.chunk:
            return None
        if self.codec is None and size <= SMALL:  # most: straight into the gather buffer
            return self.small_in_place(item, attrs)
        if len(self.buffer) < size:
            self.buffer = memoryview(bytearray(min(self.spec.chunk, max(size, SMALL))))
        view = self.buffer[:size]
        expect = Identity(size, item[MTIME], item[CTIME], item[INO], item[DEV])
        got = self.source(item[SRC]).read_whole(item[PATH], expect, view, attrs)
        if got is None:
            return None
        self.record(item, 0, view)
        if got[0] or got[1]:
            self.metas.append((item[FID], *got))
        return got[0]

    def small_in_place(self, item: tuple, attrs: bool) -> bytes | None:
        """A small whole file of a plain set (``small_file``'s checks passed, at most
        ``SMALL``) read straight into the gather buffer after room for its header, which
        is put there once the bytes are hashed: no copy of the payload, one call per
        file (the million-small-files path). Its attributes' payload as ``small_file``
        gives it; None when nothing was written (the source has no fast path, the file
        was not as scanned) or its names are too long for the buffer's spare room."""
        path = item[PATH]
        link = item[LINK]
        size = item[SIZE]
        hsize = PLAIN_HEADER_FIXED + len(path) + len(link)
        at = self.fill + hsize
        if at + size > ROOM:
            self.flush_gather()
            at = hsize
            if at + size > ROOM:
                return None
        src = self.sources.get(item[SRC]) or self.source(item[SRC])
        expect = _identity(Identity, (size, item[MTIME], item[CTIME], item[INO], item[DEV]))
        view = self.gather_view[at : at + size]
        got = src.read_whole(path, expect, view, attrs)
        if got is None:
            return None
        vol = self.volume or self.open_volume()  # (no volume: nothing is gathered yet)
        digest = checksum(view)
        header = plain_header(self.set_id, item, 0, size, digest)
        fill = self.fill
        self.gather[fill : fill + hsize] = header
        self.pending.append((item[FID], vol.name, vol.position, hsize, 0, size, digest, -1))
        self.fill = fill = at + size
        self.sent += size
        vol.position += hsize + size
        vol.records += 1
        vol.since_checkpoint += hsize + size
        if fill >= GATHER:
            self.flush_gather()
        if got[0] or got[1]:
            self.metas.append((item[FID], *got))
        return got[0]

    def copy_range(self, item: tuple) -> None:
        """Read the item's byte range through its source and write it as records; then
        check that the file is still as the scan saw it (else SourceChanged)."""
        src = self.source(item[SRC])
        expect = Identity(item[FSIZE], item[MTIME], item[CTIME], item[INO], item[DEV])
        reader = self.reader = src.open(item[PATH], expect)
        chunk = self.spec.chunk
        offset, end = item[OFF], item[OFF] + item[SIZE]
        if len(self.buffer) < min(chunk, item[SIZE]):
            self.buffer = memoryview(bytearray(min(chunk, max(item[SIZE], SMALL))))
        buffer = self.buffer
        first = len(self.pending)  # this item's records are pending[first:]
        while offset < end:
            want = min(chunk, end - offset)
            got = reader.readinto(offset, buffer[:want])
            if got != want:
                raise SourceChanged("file shrank while being read")
            self.record(item, offset, buffer[:got])
            offset += got
        try:
            src.check(expect, reader.identity())
        except SourceGrew as grew:
            if not self.still_the_beginning(reader, self.pending[first:]):
                raise SourceChanged(
                    f"file changed while being read ({grew.fields}), not only at its end"
                ) from grew
            raise

    def reader_xattrs(self, fid: int) -> bytes:
        """The open file's extended attributes when its reader gives them; what was read,
        or why it could not be kept, waits for ``Metas``."""
        got = self.reader.xattrs() if self.reader is not None else None
        if got is not None and (got[0] or got[1]):
            self.metas.append((fid, *got))
        return got[0] if got is not None else b""

    def still_the_beginning(self, reader: FileReader, records: list) -> bool:
        """The file grew while read: what was read is kept only if it still is the
        file's beginning (a log appended to), which reading it again tells."""
        buffer = self.buffer
        for _fid, _vol, _pos, _hsize, offset, n, digest, _stored in records:
            at = 0
            hasher = self.codec.hasher() if self.codec is not None else blake3()
            while at < n:
                got = reader.readinto(offset + at, buffer[: min(len(buffer), n - at)])
                if not got:
                    break
                hasher.update(buffer[:got])
                at += got
            if at != n or hasher.digest() != digest:
                return False
        return True
