"""Columnar storage of scanned entries: a million files in well under 200 MB.

One ``Entries`` table holds every path a scan found, as arrays (kind, size, times,
mode, owner, inode, device, source number) plus the paths and link targets in two byte
blobs with offsets. No Python object per entry: an entry is a row number. ``entry(i)``
builds a ``FileEntry`` for the few places that want one (the catalog, tests).

Paths are bytes (``os.fsencode`` of the absolute path as recorded in the catalog), so
names that are not valid UTF-8 survive.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator

from parbackup.model import FileEntry, Kind

KINDS: tuple[Kind, ...] = tuple(Kind)
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
FILE = KIND_INDEX[Kind.FILE]
DIR = KIND_INDEX[Kind.DIR]
SYMLINK = KIND_INDEX[Kind.SYMLINK]
HARDLINK = KIND_INDEX[Kind.HARDLINK]


class Entries:
    """Every entry of a scan, in columns (see the module docstring)."""

    __slots__ = (
        "_link",
        "_link_at",
        "_path",
        "_path_at",
        "ctime_ns",
        "dev",
        "gid",
        "ino",
        "kind",
        "mode",
        "mtime_ns",
        "size",
        "source",
        "uid",
    )

    def __init__(self) -> None:
        self.kind = array("B")
        self.size = array("q")
        self.mode = array("I")
        self.uid = array("I")
        self.gid = array("I")
        self.mtime_ns = array("q")
        self.ctime_ns = array("q")
        self.ino = array("Q")
        self.dev = array("Q")
        self.source = array("H")
        self._path = bytearray()
        self._path_at = array("Q", [0])
        self._link = bytearray()
        self._link_at = array("Q", [0])

    def __len__(self) -> int:
        return len(self.kind)

    def append(
        self,
        path: bytes,
        kind: int,
        size: int,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        ctime_ns: int = 0,
        ino: int = 0,
        dev: int = 0,
        source: int = 0,
        link: bytes = b"",
    ) -> int:
        """Add one entry (``kind`` is an index into ``KINDS``); its row number."""
        self.kind.append(kind)
        self.size.append(size)
        self.mode.append(mode)
        self.uid.append(uid & 0xFFFFFFFF)
        self.gid.append(gid & 0xFFFFFFFF)
        self.mtime_ns.append(mtime_ns)
        self.ctime_ns.append(ctime_ns)
        self.ino.append(ino)
        self.dev.append(dev)
        self.source.append(source)
        self._path += path
        self._path_at.append(len(self._path))
        if link:
            self._link += link
        self._link_at.append(len(self._link))
        return len(self.kind) - 1

    def extend_rows(self, rows: list[tuple]) -> None:
        """Add many entries at once; a row is ``append``'s arguments in order, all given.

        The scan's hot path: the rows are turned into columns by ``zip`` and each column
        extended in one call, instead of twelve appends per entry.
        """
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        paths, links = cols[0], cols[11]
        at, blob = self._path_at, self._path
        for p in paths:
            blob += p
            at.append(len(blob))
        lat, lblob = self._link_at, self._link
        for link in links:
            if link:
                lblob += link
            lat.append(len(lblob))
        for arr, col in zip(
            (self.kind, self.size, self.mode, self.uid, self.gid, self.mtime_ns,
             self.ctime_ns, self.ino, self.dev, self.source),
            cols[1:11],
            strict=True,
        ):  # fmt: skip
            arr.extend(col)

    def add(self, entry: FileEntry, source: int = 0, dev: int = 0) -> int:
        """Add a ``FileEntry`` (tests, and sources that build one anyway)."""
        return self.append(
            os.fsencode(entry.path),
            KIND_INDEX[entry.kind],
            entry.size,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime_ns,
            entry.ctime_ns,
            entry.ino,
            dev,
            source,
            os.fsencode(entry.link) if entry.link else b"",
        )

    def path_bytes(self, i: int) -> bytes:
        """The recorded path of entry ``i`` as bytes."""
        return bytes(self._path[self._path_at[i] : self._path_at[i + 1]])

    def path(self, i: int) -> str:
        """The recorded path of entry ``i``."""
        return os.fsdecode(self.path_bytes(i))

    def blobs(self) -> tuple[bytearray, array, bytearray, array]:
        """The path blob and offsets, then the link blob and offsets (hot loops slice
        them directly; entry ``i`` is ``blob[at[i]:at[i + 1]]``)."""
        return self._path, self._path_at, self._link, self._link_at

    def link_bytes(self, i: int) -> bytes:
        """Entry ``i``'s link target (symlink), first name (hard link) or device number."""
        return bytes(self._link[self._link_at[i] : self._link_at[i + 1]])

    def kind_of(self, i: int) -> Kind:
        return KINDS[self.kind[i]]

    def entry(self, i: int, source_name: str = "") -> FileEntry:
        """Entry ``i`` as a ``FileEntry``."""
        return FileEntry(
            path=self.path(i),
            kind=KINDS[self.kind[i]],
            size=self.size[i],
            mode=self.mode[i],
            mtime_ns=self.mtime_ns[i],
            uid=self.uid[i],
            gid=self.gid[i],
            link=os.fsdecode(self.link_bytes(i)),
            source=source_name,
            ctime_ns=self.ctime_ns[i],
            ino=self.ino[i],
        )

    def __iter__(self) -> Iterator[FileEntry]:
        return (self.entry(i) for i in range(len(self)))

    def set_size(self, i: int, size: int) -> None:
        """Correct entry ``i``'s size (a stream's, known only at its end)."""
        self.size[i] = size

    def total_bytes(self, files: Iterable[int] | None = None) -> int:
        """Payload bytes of regular files (of ``files`` only, when given)."""
        kind, size = self.kind, self.size
        rows = range(len(kind)) if files is None else files
        return sum(size[i] for i in rows if kind[i] == FILE)

    def nbytes(self) -> int:
        """Memory the table holds (for the scale benchmark)."""
        arrays = (
            self.kind,
            self.size,
            self.mode,
            self.uid,
            self.gid,
            self.mtime_ns,
            self.ctime_ns,
            self.ino,
            self.dev,
            self.source,
            self._path_at,
            self._link_at,
        )
        return sum(a.itemsize * len(a) for a in arrays) + len(self._path) + len(self._link)

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> Entries:
        """A table holding ``entries`` (tests, small callers)."""
        out = cls()
        for e in entries:
            out.add(e)
        return out
