"""A directory tree (or a single file) on any mounted filesystem as a source.

Scanning walks the tree with ``os.scandir`` on bytes paths (no decoding, names that are
not UTF-8 survive), depth first, sorted by name, into the columnar ``Entries`` table.
A regular file with several names is backed up once: the first name met is a FILE,
every later name a HARDLINK whose link is that first path. FIFOs, sockets and device
nodes are recorded (a device node with its number) and never read, so a FIFO cannot
hang a backup.

Reading opens the file with ``O_NOFOLLOW | O_NONBLOCK`` and checks that it is still the
regular file the scan saw (same device and inode): a path whose directory was swapped
for a symlink to a place outside the tree, or a file replaced since the scan, is never
read (``SourceChanged``). A snapshot is read through ``read_root`` while entries keep
the live paths (REQUIREMENTS F4).

Each entry's extended attributes (POSIX ACLs, file capabilities, SELinux labels, user
attributes: parbackup/xattrs.py) are read with the scan, relative to the open directory
and without following a symlink; a hard link's are its first name's. A regular file with
data is the exception: its reader reads them from the descriptor its bytes come through
(``_LocalReader.xattrs``, in the mover), so a million small files cost the scan no
system call each (tests/test_scan_xattrs.py counts them). A spec with ``xattrs`` off
(``backup --no-xattrs``) reads none, in the scan or the reader.

A selection (``spec.select``: excludes, tags, one filesystem, see sources/select.py)
runs through its own copy of the walk, so a scan without one keeps its lean loop.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator
from operator import attrgetter

from parbackup import xattrs
from parbackup.entries import DIR, FILE, HARDLINK, KIND_INDEX, SYMLINK, Entries
from parbackup.errors import SourceError
from parbackup.model import Kind
from parbackup.sources.base import ErrorFunc, FileReader, Identity, Source, SourceChanged
from parbackup.sources.select import ONE_FILE_SYSTEM, TreeFilter

FIFO, SOCKET, DEVICE = KIND_INDEX[Kind.FIFO], KIND_INDEX[Kind.SOCKET], KIND_INDEX[Kind.DEVICE]
_BY_NAME = attrgetter("name")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NO_XATTRS = (b"", "")
_is_reg = stat.S_ISREG
_ROWS_AT_ONCE = 1024
"""Scanned rows added to the table at once (a directory holds ~7 entries on average)."""
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
"""What ``os.fsencode`` encodes names with (the scan calls ``str.encode`` itself)."""
Top = tuple[bytes, int, int]
"""A directory to walk: (the path it is read at, its device, its inode)."""
_SWAPPED = "replaced since it was listed (a symlink, a file or another directory): not walked into"
_SWAP_ERRNOS = (errno.ELOOP, errno.ENOTDIR)
"""What opening a directory with ``O_NOFOLLOW | O_DIRECTORY`` fails with once its name is
a symlink (Linux says ENOTDIR, not ELOOP) or a file."""
_CLAMPED = (
    "its time is past what a backup set holds (64-bit nanoseconds: 1677 to 2262): backed"
    " up, and restored with the nearest time a set holds"
)


def _kind(mode: int) -> int | None:
    """The Entries kind of a stat mode, or None for something unknown."""
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISSOCK(mode):
        return SOCKET
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return DEVICE
    return None


class _LocalReader(FileReader):
    """An open local file."""

    def __init__(self, fd: int, with_xattrs: bool = True) -> None:
        self.fd = fd
        self.with_xattrs = with_xattrs

    def readinto(self, offset: int, view: memoryview) -> int:
        got = 0
        try:
            while got < len(view):
                n = os.preadv(self.fd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            raise SourceError(exc.strerror or str(exc)) from exc
        return got

    def identity(self) -> Identity:
        st = os.fstat(self.fd)
        return Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def xattrs(self) -> tuple[bytes, str]:
        if not self.with_xattrs:  # backup --no-xattrs: none stored
            return b"", ""
        return xattrs.read_fd(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalTree(Source):
    """A local directory tree or file (``SourceSpec`` kind "tree")."""

    def _read_path(self, path: str | bytes) -> bytes:
        """Where the bytes of the entry recorded as ``path`` are read from."""
        spec = self.spec
        if not spec.read_root and type(path) is bytes:  # a mover's item: as it came
            return path
        raw = os.fsencode(path)
        if not spec.read_root:
            return raw
        return os.fsencode(spec.read_root) + raw[len(os.fsencode(spec.record_root)) :]

    def open(self, path: str | bytes, expect: Identity | None = None) -> FileReader:
        try:
            fd = os.open(self._read_path(path), _OPEN)
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: the name is a symlink now
                raise SourceChanged("replaced by a symlink since the scan") from exc
            raise SourceError(exc.strerror or str(exc)) from exc
        reader = _LocalReader(fd, self.spec.xattrs)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceChanged("no longer a regular file")
            if expect is not None and (st.st_ino, st.st_dev) != (expect.ino, expect.dev):
                raise SourceChanged("replaced since the scan (another inode or filesystem)")
        except BaseException:
            reader.close()
            raise
        return reader

    def read_whole(
        self, path: str | bytes, expect: Identity, view: memoryview, attrs: bool
    ) -> tuple[bytes, str] | None:
        """``open``, ``readinto``, ``identity``, ``xattrs`` and ``close`` of a small file
        without a reader object: the same system calls and checks in the same order
        (still the scanned regular file before reading; unchanged after), a third of a
        mover's Python per file (a million small files). None on anything unusual."""
        spec = self.spec
        try:  # a mover's item as it came (``_read_path``'s first case, inline)
            fd = os.open(
                path if type(path) is bytes and not spec.read_root else self._read_path(path), _OPEN
            )
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not _is_reg(st.st_mode) or (st.st_ino, st.st_dev) != (expect.ino, expect.dev):
                return None
            if os.preadv(fd, [view], 0) != len(view):
                return None
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev) != expect:
                return None
            return xattrs.read_fd(fd) if attrs and spec.xattrs else _NO_XATTRS
        except OSError:
            return None
        finally:
            os.close(fd)

    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        self.scan_under(out, index, on_error, self.scan_top(out, index, on_error))

    def scan_top(self, out: Entries, index: int, on_error: ErrorFunc) -> list[Top]:
        """The first part of ``scan``: the root's entry and its children's (a tree with a
        selection: all of it); the top-level directories left to walk, in scan order,
        for ``scan_under`` (which may be given them in parts, in other processes:
        engine/splitscan.py)."""
        spec = self.spec
        _meta = _META_READERS[spec.xattrs]  # every _meta call below: none when off
        record, read = self._roots()
        self.first_names = {}  # files with several names: a split scan rejoins them
        row = self._row_of(index, on_error)
        out.set_root(index, record)
        try:
            root_st = os.lstat(read)
            root = row(read, root_st)
        except OSError as exc:
            on_error(spec.display or spec.record_root, exc.strerror or str(exc))
            return []
        if root is None:
            return []
        if spec.select:
            self._scan_selected(root, root_st, read, row, out, index, on_error)
            return []
        _extend(out, [root], _meta(read, None, root, record, on_error), record, on_error)
        if root[1] != DIR:
            return []
        return self._walk(out, index, on_error, [(read, root_st.st_dev, root_st.st_ino)], False)

    def scan_under(
        self,
        out: Entries,
        index: int,
        on_error: ErrorFunc,
        tops: list[Top],
        between: Callable[[list[Top], int], None] | None = None,
    ) -> None:
        """Every entry below the directories ``tops`` (from ``scan_top``, all of them or
        a run of neighbours), depth first, sorted by name, into ``out``.

        ``between(pending, walked)`` is called after each directory with the directories
        still to walk, the next one last, and how many entries were walked so far (some
        may not be in ``out`` yet): they are walked from the end, each with everything
        below it before the one before it, so ``pending[:k]`` is the last part of the
        scan order, and the caller may take it away to be walked elsewhere
        (engine/splitscan.py)."""
        if not hasattr(self, "first_names"):  # a part scanned on its own (a helper)
            self.first_names = {}
        if tops:
            self._walk(out, index, on_error, tops, True, between)

    def _roots(self) -> tuple[bytes, bytes]:
        """The recorded root and the root read from (a snapshot's), as bytes."""
        record = os.fsencode(self.spec.record_root)
        return record, os.fsencode(self.spec.read_root) if self.spec.read_root else record

    def _row_of(self, index: int, on_error: ErrorFunc) -> Callable[..., tuple | None]:
        """The function that makes an entry's row (the scan's slow path)."""
        record, read = self._roots()
        cut = len(read)
        first = self.first_names

        def row(raw_path: bytes, st: os.stat_result, at: int | None = None) -> tuple | None:
            """The entry's row for ``Entries.extend_rows`` (None when skipped), its path
            after the source root (``Entries.set_root``); ``at``: the open directory
            holding it (a link is read there, not through the path)."""
            kind = _kind(st.st_mode)
            path = raw_path[cut:]
            if kind is None:
                on_error(os.fsdecode(record + path), "unknown file type, not backed up")
                return None
            link, size = b"", 0
            if kind == FILE:
                size = st.st_size
                if st.st_nlink > 1:
                    seen = first.setdefault((st.st_dev, st.st_ino), record + path)
                    if seen != record + path:
                        kind, link, size = HARDLINK, seen, 0
            elif kind == SYMLINK:
                name = os.path.basename(raw_path)
                link = os.readlink(raw_path) if at is None else os.readlink(name, dir_fd=at)
            elif kind == DEVICE:
                link = str(st.st_rdev).encode()
            return (path, kind, size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino, st.st_dev, index, link)  # fmt: skip

        return row

    def _walk(
        self,
        out: Entries,
        index: int,
        on_error: ErrorFunc,
        tops: list[Top],
        descend: bool,
        between: Callable[[list[Top], int], None] | None = None,
    ) -> list[Top]:
        """The scan's hot loop over the directories ``tops`` (and below them when
        ``descend``); without ``descend``, the subdirectories it found, to walk later."""
        _meta = _META_READERS[self.spec.xattrs]  # every _meta call below: none when off
        record, read = self._roots()
        cut = len(read)
        row = self._row_of(index, on_error)
        is_reg = stat.S_ISREG
        found: list[Top] = []
        rows: list[tuple] = []  # held over a few directories: added _ROWS_AT_ONCE at a
        metas: dict[int, bytes] = {}  # time (one extend_rows per directory cost ~1.5 us
        # an entry more); ``between`` is told how many entries were walked, held ones too

        def step(pending: list[Top]) -> None:
            assert between is not None
            between(pending, len(out) + len(rows))

        walk = _directories(tops, record, cut, on_error, descend, step if between else None)
        for fd, prefix, children, subdirs in walk:
            here = prefix[cut:]
            for child in children:
                name = child.name.encode(_FS_ENCODING, _FS_ERRORS)  # os.fsencode's, inline
                try:
                    st = child.stat(follow_symlinks=False)  # through fd: no path walk
                    if is_reg(st.st_mode) and st.st_nlink == 1 and st.st_size:  # most: inline
                        rows.append((here + name, FILE, st.st_size, st.st_mode, st.st_uid,
                                     st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                     st.st_dev, index, b""))  # fmt: skip
                        continue  # its attributes are read with its data (the mover)
                    entry = row(prefix + name, st, fd)
                except OSError as exc:
                    on_error(os.fsdecode(record + here + name), exc.strerror or str(exc))
                    continue
                if entry is not None:
                    metas.update(_meta(name, fd, entry, record, on_error, len(rows)))
                    rows.append(entry)
                    if entry[1] == DIR:
                        subdirs.append((prefix + name, st.st_dev, st.st_ino))
            if len(rows) >= _ROWS_AT_ONCE:
                _extend(out, rows, metas, record, on_error)
                rows.clear()
                metas.clear()
            found = subdirs
        _extend(out, rows, metas, record, on_error)
        return [] if descend else found

    def _scan_selected(self, root, root_st, read: bytes, row, out, index, on_error) -> None:
        """The walk of ``scan`` with ``spec.select`` applied: each entry is asked once,
        a directory left out is never entered (kept apart so that a scan without a
        selection pays nothing for it)."""
        record = os.fsencode(self.spec.record_root)
        cut = len(read)
        select = TreeFilter(self.spec.select, root_st.st_dev)
        _meta = _META_READERS[self.spec.xattrs]  # every _meta call below: none when off
        excluded = self.excluded
        rule = select.rule(record, read, root_st)
        if rule:
            excluded.add(os.fsdecode(record), rule)
            return
        _extend(out, [root], _meta(read, None, root, record, on_error), record, on_error)
        if root[1] != DIR:
            return
        is_reg = stat.S_ISREG
        start = [(read, root_st.st_dev, root_st.st_ino)]
        for fd, prefix, children, subdirs in _directories(start, record, cut, on_error, True):
            rows: list[tuple] = []
            metas: dict[int, bytes] = {}
            for child in children:
                name = os.fsencode(child.name)
                here = prefix + name
                path = record + here[cut:]
                try:
                    rule = select.named_rule(path, child.is_dir(follow_symlinks=False))
                    if rule:  # told before any stat: an excluded hung mount stays untouched
                        excluded.add(os.fsdecode(path), rule)
                        continue
                    st = child.stat(follow_symlinks=False)
                    rule = select.found_rule(here, st)
                    if rule:
                        excluded.add(os.fsdecode(path), rule)
                        continue
                    if is_reg(st.st_mode) and st.st_nlink == 1 and st.st_size:  # most: inline
                        rows.append((here[cut:], FILE, st.st_size, st.st_mode, st.st_uid,
                                     st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                     st.st_dev, index, b""))  # fmt: skip
                        continue  # its attributes are read with its data (the mover)
                    entry = row(here, st, fd)
                except OSError as exc:
                    on_error(os.fsdecode(path), exc.strerror or str(exc))
                    continue
                if entry is not None:
                    metas.update(_meta(name, fd, entry, record, on_error, len(rows)))
                    rows.append(entry)
                    if entry[1] == DIR:
                        if select.enter(st):
                            subdirs.append((here, st.st_dev, st.st_ino))
                        else:
                            excluded.add(os.fsdecode(path) + "/", ONE_FILE_SYSTEM)
            _extend(out, rows, metas, record, on_error)


def _metas(
    name: bytes, fd: int | None, row: tuple, record: bytes, on_error: ErrorFunc, k: int = 0
) -> dict[int, bytes]:
    """``{k: payload}`` of the extended attributes of the entry ``row`` (named ``name`` in
    the open directory ``fd``, or the path ``name`` for a source's root), {} when it has
    none; a hard link has none of its own, and a regular file with data gets its own from
    its reader (in the mover). Attributes that cannot be kept are reported, never fatal."""
    if row[1] == HARDLINK or (row[1] == FILE and row[2]):
        return {}
    payload, why = xattrs.read(name, fd)
    if why:
        on_error(os.fsdecode(record + row[0]), why)
    return {k: payload} if payload else {}


def _no_metas(
    name: bytes, fd: int | None, row: tuple, record: bytes, on_error: ErrorFunc, k: int = 0
) -> dict[int, bytes]:
    """``_metas`` for a scan that reads no extended attributes (``backup --no-xattrs``)."""
    return {}


_META_READERS = {True: _metas, False: _no_metas}
"""``_metas`` or ``_no_metas``, by the spec's ``xattrs``."""


def _extend(
    out: Entries, rows: list[tuple], metas: dict[int, bytes], record: bytes, on_error: ErrorFunc
) -> None:
    """Add ``rows`` and the extended attributes ``metas`` (by row number in ``rows``);
    name each entry whose time a set cannot hold (its data is still backed up)."""
    out.extend_rows(rows)
    first = len(out) - len(rows)
    for k, payload in metas.items():
        out.set_meta(first + k, payload)
    if out.clamped:
        for i in sorted(set(out.clamped)):
            on_error(os.fsdecode(record + rows[i - first][0]), _CLAMPED)
        out.clamped.clear()


def _directories(
    tops: list[Top],
    record: bytes,
    cut: int,
    on_error: ErrorFunc,
    descend: bool,
    between: Callable[[list[Top]], None] | None = None,
) -> Iterator[tuple[int, bytes, list, list]]:
    """Walk the directories ``tops`` (``(path, device, inode)``) in order, each depth
    first (only ``tops`` themselves without ``descend``), sorted by name: for each, yield
    (its open descriptor, its path + "/", its entries sorted by name, a list the caller
    fills with ``(path, device, inode)`` of the subdirectories to enter).

    Each directory is opened without following a symlink and must still be the one its
    parent listed (device, inode): a directory swapped for a symlink to a place outside
    the tree while the tree is scanned is reported and never walked into.
    """
    stack = list(reversed(tops))
    while stack:
        directory, dev, ino = stack.pop()
        where = os.fsdecode(record + directory[cut:])
        try:
            fd = os.open(directory, _OPEN_DIR)
        except OSError as exc:
            on_error(where, _SWAPPED if exc.errno in _SWAP_ERRNOS else exc.strerror or str(exc))
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                on_error(where, _SWAPPED)
                continue
            with os.scandir(fd) as it:
                children = sorted(it, key=_BY_NAME)
            subdirs: list[tuple[bytes, int, int]] = []
            yield fd, directory.rstrip(b"/") + b"/", children, subdirs
            if descend:
                stack.extend(reversed(subdirs))
        except OSError as exc:
            on_error(where, exc.strerror or str(exc))
        finally:
            os.close(fd)
        if between is not None:  # the caller may take the end of the stack away
            between(stack)
