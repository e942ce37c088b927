"""Columnar storage of scanned entries: a million files in well under 200 MB.

One ``Entries`` table holds every path a scan found, as arrays (kind, size, times,
mode, owner, inode, device, source number) plus the paths in one byte blob with offsets.
Size, inode and device take 4 bytes each until a value needs 8 (a file of 4 GiB or
more, a 64-bit inode number), owners 2 until one is past 65535: then that column is
widened, once.
A source may set a root (``set_root``): its paths are then stored after that prefix
only. Link targets (symlinks, hard links' first names, device numbers) are few and kept
in a dict. Extended attributes (``set_meta``: the kind-8 payload, parbackup/xattrs.py)
are interned: an array holds each entry's payload number, so a million files sharing
one SELinux label cost 4 MB, not a million objects. No Python object per entry: an entry is a row
number. ``entry(i)`` builds a ``FileEntry`` for the few places that want one (the
catalog, tests).

Paths are bytes (``os.fsencode`` of the absolute path as recorded in the catalog), so
names that are not valid UTF-8 survive.
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, repeat
from operator import add

from parbackup.model import FileEntry, Kind

NARROW_NAMES = 0xFFFFFFFF
"""The longest name blob whose offsets are kept in 4 bytes; past it, 8 (``_widen``)."""
KINDS: tuple[Kind, ...] = tuple(Kind)
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
FILE = KIND_INDEX[Kind.FILE]
_NOT_FILE = re.compile(b"[^%s]" % re.escape(bytes([FILE])))
"""An entry of another kind than a regular file, in ``kind.tobytes()``."""
DIR = KIND_INDEX[Kind.DIR]
SYMLINK = KIND_INDEX[Kind.SYMLINK]
HARDLINK = KIND_INDEX[Kind.HARDLINK]


_COLUMNS = ("kind", "size", "mode", "uid", "gid", "mtime_ns", "ctime_ns", "ino", "dev", "source")
"""The columns of a row after its path, in ``append``'s order."""
_WIDER = {"size": "q", "ino": "Q", "dev": "Q", "uid": "I", "gid": "I"}
"""What a narrow column becomes when a value does not fit."""
TIME_MIN, TIME_MAX = -(1 << 63), (1 << 63) - 1
"""The times a set holds: signed 64-bit nanoseconds (1677-09-21 to 2262-04-11)."""
_TIMES = ("mtime_ns", "ctime_ns")


def clamp_ns(ns: int) -> int:
    """A time in nanoseconds as a set holds it: ext4 and XFS keep times up to the year
    2446 (``touch -d 2400-01-01`` makes one), past what 64 bits of nanoseconds hold."""
    return TIME_MIN if ns < TIME_MIN else TIME_MAX if ns > TIME_MAX else ns


def one_root(sources: array, roots: Mapping[int, bytes]) -> bytes | None:
    """The root before the paths of rows whose sources are ``sources`` when they are all
    of one source (b"" when it has none, or there are no rows); None when of several.
    A comparison of arrays, no Python per row: most batches are of one source."""
    one = sources[:1]
    if one * len(sources) != sources:
        return None
    return roots.get(one[0], b"") if one else b""


class Entries:
    """Every entry of a scan, in columns (see the module docstring)."""

    __slots__ = (
        "_links",
        "_meta_at",
        "_meta_ids",
        "_meta_list",
        "_path",
        "_path_at",
        "_roots",
        "clamped",
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
        self.size = array("I")  # these three widen to 8 bytes at their first larger value
        self.mode = array("H")  # st_mode is 16 bits
        self.uid = array("H")  # owners too, widened to 4 bytes past 65535
        self.gid = array("H")
        self.mtime_ns = array("q")
        self.ctime_ns = array("q")
        self.ino = array("I")
        self.dev = array("I")
        self.source = array("H")
        self._path = bytearray()
        self._path_at = array("I", [0])  # widened to "Q" past 4 GiB of names
        self._links: dict[int, bytes] = {}
        self._meta_at = array("I")  # entry -> 1 + index into _meta_list; 0: none
        self._meta_list: list[bytes] = []
        self._meta_ids: dict[bytes, int] = {}
        self._roots: dict[int, bytes] = {}
        self.clamped: list[int] = []
        """Rows whose time was out of range and is held as the nearest one (``clamp_ns``);
        the scan names them and clears the list."""

    def set_root(self, source: int, root: bytes) -> None:
        """From now on, paths of ``source`` are given (and stored) after ``root``."""
        self._roots[source] = root

    def _widen(self, extra: int = 0) -> None:
        """Widen the name offsets to 8 bytes once the blob, with the ``extra`` bytes about
        to be added, is longer than a 4-byte offset can tell."""
        if self._path_at.typecode == "I" and len(self._path) + extra > NARROW_NAMES:
            self._path_at = array("Q", self._path_at)

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
        self._extend("size", (size,))
        self.mode.append(mode)
        self._extend("uid", (uid & 0xFFFFFFFF,))
        self._extend("gid", (gid & 0xFFFFFFFF,))
        self._extend("mtime_ns", (mtime_ns,))
        self._extend("ctime_ns", (ctime_ns,))
        self._extend("ino", (ino,))
        self._extend("dev", (dev,))
        self.source.append(source)
        self._path += path
        self._widen()
        self._path_at.append(len(self._path))
        if link:
            self._links[len(self.kind) - 1] = link
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
        self._add_paths(paths)
        first = len(self.kind)
        for k, link in enumerate(links):
            if link:
                self._links[first + k] = link
        for name, col in zip(_COLUMNS, cols[1:11], strict=True):
            self._extend(name, col)

    def _add_paths(self, paths: Iterable[bytes]) -> None:
        """Append the paths of new rows to the path blob."""
        blob = self._path
        paths = paths if isinstance(paths, (list, tuple)) else list(paths)
        self._widen(sum(map(len, paths)))  # the whole batch: it may cross 4 GiB of names
        at = self._path_at
        for p in paths:
            blob += p
            at.append(len(blob))

    def _extend(self, name: str, values: Iterable[int]) -> None:
        """Extend column ``name``; a narrow one (size, inode, device: 4 bytes, enough for
        nearly every file) is widened to 8 bytes at its first value that needs them."""
        column = getattr(self, name)
        before = len(column)
        try:
            column.extend(values)
        except OverflowError:
            if name in _TIMES:  # a time past 2262: kept as the latest one a set holds
                del column[before:]
                values = tuple(values)
                self.clamped += [before + k for k, v in enumerate(values) if clamp_ns(v) != v]
                column.extend(clamp_ns(v) for v in values)
                return
            if name not in _WIDER or column.typecode == _WIDER[name]:
                raise
            del column[before:]  # the values before the large one went in
            wide = array(_WIDER[name], column)
            wide.extend(values)
            setattr(self, name, wide)

    def extend_columns(
        self, paths: list[bytes], columns: list[array], source: int, links: dict[int, bytes]
    ) -> None:
        """Add many entries given as columns (a tree scanned in pieces on its host,
        sources/hostscan.py): ``paths`` (after the source's root), then arrays of kind,
        size, mode, uid, gid, mtime_ns, ctime_ns, ino and dev as long, in this table's
        types; all of ``source``; ``links`` by position among them."""
        first = len(self.kind)
        self._add_paths(paths)
        for name, col in zip(_COLUMNS[:9], columns, strict=True):
            same = col.typecode == getattr(self, name).typecode
            self._extend(name, col if same else col.tolist())  # a piece may be wider
        self.source.extend(array("H", [source]) * len(paths))
        for k, link in links.items():
            self._links[first + k] = link

    def extend_table(self, other: Entries, source: int) -> int:
        """Append every row of ``other`` (paths after the same root as this table's
        ``source``) as rows of ``source``, column by column (a tree's part scanned by
        another process, engine/splitscan.py); the row number of the first."""
        first = len(self.kind)
        base = len(self._path)
        self._path += other._path
        self._widen()
        ends = other._path_at[1:]
        self._path_at.extend(map(base.__add__, ends) if base else ends)
        for name in _COLUMNS[:9]:
            mine, theirs = getattr(self, name), getattr(other, name)
            self._extend(name, theirs if mine.typecode == theirs.typecode else theirs.tolist())
        self.source.extend(array("H", [source]) * len(other))
        for k, link in other._links.items():
            self._links[first + k] = link
        for k, number in enumerate(other._meta_at):
            if number:
                self.set_meta(first + k, other._meta_list[number - 1])
        return first

    def make_hardlink(self, i: int, first: bytes) -> None:
        """Turn entry ``i`` into a hard link to the file first met as ``first`` (no data,
        no attributes of its own)."""
        self.kind[i] = HARDLINK
        self.size[i] = 0
        self._links[i] = first
        self.set_meta(i, b"")

    def add(self, entry: FileEntry, source: int = 0, dev: int = 0) -> int:
        """Add a ``FileEntry`` (tests, and sources that build one anyway)."""
        i = self.append(
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
        self.set_meta(i, entry.meta)
        return i

    def path_bytes(self, i: int) -> bytes:
        """The recorded path of entry ``i`` as bytes."""
        tail = self._path[self._path_at[i] : self._path_at[i + 1]]
        return self._roots.get(self.source[i], b"") + tail

    def path(self, i: int) -> str:
        """The recorded path of entry ``i``."""
        return os.fsdecode(self.path_bytes(i))

    def blobs(self) -> tuple[bytearray, array, dict[int, bytes], dict[int, bytes]]:
        """The path blob, its offsets, the roots by source and the links by entry (hot
        loops use them directly: entry ``i``'s path is ``roots.get(source[i], b"") +
        blob[at[i]:at[i + 1]]``, its link ``links.get(i, b"")``)."""
        return self._path, self._path_at, self._roots, self._links

    def joined_paths(self, rows: Sequence[int], sources: array) -> tuple[bytes, array]:
        """The recorded paths of ``rows`` (whose sources are ``sources``) in one bytes,
        and where each begins in it, then where the last ends (``array('q')``): a batch's
        ``messages.Work.paths`` and ``path_at``.

        Rows of one source (``one_root``) take their slices of the blob and are joined
        with the root between them, not each added to its root (a million small files:
        0.20 against 0.28 s); rows of several sources are each added to their own."""
        blob, at, roots = self._path, self._path_at, self._roots
        root = one_root(sources, roots)
        if root is None:
            names = [
                roots.get(s, b"") + blob[at[f] : at[f + 1]]
                for f, s in zip(rows, sources, strict=True)
            ]
            return b"".join(names), array("q", accumulate(map(len, names), initial=0))
        names = [blob[at[f] : at[f + 1]] for f in rows]
        if not root:
            return b"".join(names), array("q", accumulate(map(len, names), initial=0))
        lengths = map(add, map(len, names), repeat(len(root)))
        path_at = array("q", accumulate(lengths, initial=0))
        return (root + root.join(names) if names else b""), path_at

    def link_bytes(self, i: int) -> bytes:
        """Entry ``i``'s link target (symlink), first name (hard link) or device number."""
        return self._links.get(i, b"")

    def set_meta(self, i: int, payload: bytes) -> None:
        """Give entry ``i`` its extended attributes (an encoded xattrs payload)."""
        at = self._meta_at
        if not payload:
            if i < len(at):
                at[i] = 0
            return
        number = self._meta_ids.get(payload)
        if number is None:
            self._meta_list.append(payload)
            number = self._meta_ids[payload] = len(self._meta_list)
        if len(at) <= i:  # the array runs up to the last entry with attributes
            at.frombytes(bytes(at.itemsize * (i + 1 - len(at))))
        at[i] = number

    def meta_bytes(self, i: int) -> bytes:
        """Entry ``i``'s extended attributes as an xattrs payload; b"" when none."""
        at = self._meta_at
        return self._meta_list[at[i] - 1] if i < len(at) and at[i] else b""

    def has_meta(self) -> bool:
        """True when some entry has extended attributes."""
        return bool(self._meta_list)

    def names_size(self) -> int:
        """Bytes of every path and link, roots included (an estimate for headers)."""
        roots = max((len(r) for r in self._roots.values()), default=0)
        return len(self._path) + roots * len(self) + sum(map(len, self._links.values()))

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
            meta=self.meta_bytes(i),
        )

    def __iter__(self) -> Iterator[FileEntry]:
        return (self.entry(i) for i in range(len(self)))

    def set_size(self, i: int, size: int) -> None:
        """Correct entry ``i``'s size (a stream's, known only at its end)."""
        if size > 0xFFFFFFFF and self.size.typecode != _WIDER["size"]:
            self.size = array(_WIDER["size"], self.size)
        self.size[i] = size

    def total_bytes(self, files: Iterable[int] | None = None) -> int:
        """Payload bytes of regular files (of ``files`` only, when given)."""
        kind, size = self.kind, self.size
        if files is None and kind.itemsize == 1:  # all sizes less the few other entries'
            # (a million files: 0.15 -> 0.02 CPU s; a Python loop only over the others)
            others = _NOT_FILE.finditer(kind.tobytes())
            return sum(size) - sum(size[m.start()] for m in others)
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
        )
        links = sum(len(v) + 100 for v in self._links.values())  # with the dict's cost
        links += sum(len(v) + 150 for v in self._meta_list)  # the list and the dict
        links += self._meta_at.itemsize * len(self._meta_at)
        return sum(a.itemsize * len(a) for a in arrays) + len(self._path) + links

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> Entries:
        """A table holding ``entries`` (tests, small callers)."""
        out = cls()
        for e in entries:
            out.add(e)
        return out


def hardlinks_of(
    entries: Entries, problems: Mapping[int, tuple[str, str]]
) -> dict[int, tuple[str, str]]:
    """The later names (hard links) of files that could not be backed up, with why.

    A later name holds no data of its own: it restores from its first name. When the
    first name vanished or changed before it was read, the later names are reported
    with it, never listed as backed up (the file may well live on under them).
    """
    firsts = {
        entries.path_bytes(f): (f, error, kind)
        for f, (error, kind) in problems.items()
        if entries.kind[f] == FILE and kind != "grew"  # a grown file is kept: so are its links
    }
    out: dict[int, tuple[str, str]] = {}
    if not firsts:
        return out
    for i, kind in enumerate(entries.kind):
        if kind == HARDLINK and (hit := firsts.get(entries.link_bytes(i))):
            f, error, kind = hit
            why = f"a hard link to {entries.path(f)}, which was not backed up ({error})"
            out[i] = (why, kind)
    return out
