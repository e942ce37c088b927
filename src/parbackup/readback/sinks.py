"""Where checked payloads go: a directory, a block device, the parent (stdout), nowhere.

A reader process (readback/reader.py) gets a small picklable *sink spec* and builds its
sink from it with ``build_sink``. The reader calls, per file id:

- ``put(fid, ref, payload)`` for every record that passed its checks ('' or an error),
- ``complete(fid)`` once all of the file's records on this device passed ('' or error),
- ``fail(fid)`` once when one of them did not (undo what was written),
- ``finish()`` at the end ('' or an error that spoils every file not yet reported),
- ``take_unowned()`` now and then: the files it finished without their owner.

Every write's return value is checked: a short write (a full target) is an error for that
file, never ignored.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from parbackup.fileio import write_all
from parbackup.model import RecordRef
from parbackup.readback.beneath import Beneath
from parbackup.readback.partfile import (
    BLOCK,
    is_zero,
    open_part,
    parent_of,
    part_leaf,
    part_name,
    set_metadata,
    write_sparse,
)

_FLUSH_EVERY = 256 << 20
"""A block device sink flushes after this many bytes, so that no flush (the last one
included) outlasts the time a reader may stay silent (readback/core.py)."""
_MAX_OPEN = 64
"""Files a directory sink keeps open at once (a file's records usually lie together)."""
_MAX_DIRS = 8192
"""Directories a directory sink keeps open with no file of theirs open (at most a
quarter of the descriptors the process may open): records come in volume order, which
the backup's size order scatters over the tree, so a file's directory was usually opened
for an earlier file long before; each one found open saves an ``openat2``."""
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC

FileTarget = tuple[str, int, int, int, int, int, bool]
"""(destination path, size, mode, uid, gid, mtime_ns, finish here): one file of a
directory sink. With ``finish here`` the reader creates the file's ``.part``, and once
every record is in, gives it its metadata and renames it into place; otherwise (a file
split over devices) the first of its readers or the parent to come creates the ``.part``
(never truncated: the parent removed any older one before the readers started), and
the parent sizes and finishes it. A missing directory is made by the reader."""


@dataclass(frozen=True, slots=True)
class DirectorySinkSpec:
    """Write payloads into the files' ``.part`` names in a restore target; ``root`` (the
    target) is where no symlink is followed below (readback/beneath.py)."""

    files: dict[int, FileTarget]
    root: str = ""
    tag: str = ""
    """What the ``.part`` names carry so that none is an entry's name (``part_tag``)."""


@dataclass(frozen=True, slots=True)
class BlockSinkSpec:
    """Write payloads at their offsets onto the block device ``path``, then fsync."""

    path: str


@dataclass(frozen=True, slots=True)
class StreamSinkSpec:
    """Send payloads to the parent (restore --stdout), at most ``window`` unacknowledged."""

    window: int


@dataclass(frozen=True, slots=True)
class VerifySinkSpec:
    """Write nothing: only the checks."""


SinkSpec = DirectorySinkSpec | BlockSinkSpec | StreamSinkSpec | VerifySinkSpec


class Sink(Protocol):
    """A reader's sink (see the module docstring)."""

    deferred: bool
    """True when a file counts as good only after ``finish`` (block device: fsync)."""

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str: ...
    def complete(self, fid: int) -> str: ...
    def fail(self, fid: int) -> None: ...
    def finish(self) -> str: ...
    def take_unowned(self) -> list[int]:
        """Files finished since the last call whose owner root could not give."""
        ...


class DirectorySink:
    """Payloads into ``.part`` files; files wholly on this device finished here.

    A file finished here costs few system calls: its directory is opened once (below
    the root, no symlink followed) and held while the file is open, and a little longer
    for the next files of the same directory (``_MAX_DIRS``); its ``.part`` is
    created in that directory at its first payload (or at the end, if every record was
    zeros), sized only when holes end it, given its owner, mode and times through the
    open descriptor, and renamed into place in the same directory (a directory in the
    way makes ``rename`` fail with EISDIR: rename(2) never replaces one by a file).
    A file in one record (most small files) is done in the one ``put`` of its record
    (``_whole``), with none of the bookkeeping of files open across records.
    """

    deferred = False

    def __init__(self, spec: DirectorySinkSpec) -> None:
        self.files = spec.files
        self.fds: dict[int, int] = {}
        self.dirs: dict[int, str] = {}
        """The directory of each file open here (with a root only), for its calls."""
        self.dir_fds: dict[str, int] = {}
        """Directories opened below the root, by path."""
        self.users: dict[str, int] = {}
        """How many files open here use each directory of ``dir_fds`` (none: idle)."""
        self.idle: OrderedDict[str, None] = OrderedDict()
        """The directories no open file uses, the least recently used first: an
        ``OrderedDict``, whose oldest entry is taken in constant time. A plain dict's
        ``next(iter(...))`` steps over every entry deleted before it, so closing them
        all at the end took quadratic time (1,385 directories: 9.5 million
        instructions, bench/restore_instructions.py)."""
        self.keep = min(_MAX_DIRS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
        self.started: set[int] = set()
        self.ends: dict[int, int] = {}
        """How far the bytes written so far reach, per file finished here."""
        self.unowned: list[int] = []
        """Files finished here whose owner could not be given (not yet reported)."""
        self.beneath = Beneath(spec.root) if spec.root else None
        self.tag = spec.tag
        self.root = os.geteuid() == 0
        self.whole: set[int] = set()
        """Files finished by ``_whole`` whose ``complete`` has not come yet."""

    def _dir(self, fid: int) -> int:
        """The file's directory, opened below the root without following a symlink (or
        still open from an earlier file of the same directory)."""
        path = self.dirs.get(fid)
        if path is not None:
            return self.dir_fds[path]
        path = parent_of(self.files[fid][0])
        dfd = self.dir_fds.get(path)
        if dfd is None:
            dfd = self._open_dir(path)
        self.idle.pop(path, None)
        self.users[path] = self.users.get(path, 0) + 1
        self.dirs[fid] = path
        return dfd

    def _open_dir(self, path: str) -> int:
        """Open ``path`` beneath the root (made there if missing) and remember it."""
        assert self.beneath is not None
        try:
            dfd = self.beneath.open(path, _DIR_FLAGS)
        except FileNotFoundError:  # not made yet: made here, beneath the root
            dfd = self.beneath.makedirs(path)
        self.dir_fds[path] = dfd
        return dfd

    def _idle_dir(self, path: str) -> int:
        """The directory ``path`` (found open or opened), for a file that is finished
        before the caller returns: left idle, the most recently used, unless an open
        file uses it (the caller trims the idle ones once done with it). What ``_dir``
        then ``_close`` do, without the per-file records."""
        dfd = self.dir_fds.get(path)
        if dfd is None:
            dfd = self._open_dir(path)
        if path not in self.users:
            if path in self.idle:
                self.idle.move_to_end(path)
            else:
                self.idle[path] = None
        return dfd

    def _trim(self, keep: int) -> None:
        """Close the least recently used idle directories, keeping ``keep``."""
        while len(self.idle) > keep:
            path = self.idle.popitem(last=False)[0]
            os.close(self.dir_fds.pop(path))

    def _open(self, fid: int, flags: int, new: bool) -> int:
        if self.beneath is None:
            return open_part(part_name(self.files[fid][0], fid, self.tag), flags, None, new=new)
        return open_part(part_leaf(fid, self.tag), flags, self._dir(fid), new=new)

    def _fd(self, fid: int) -> int:
        fd = self.fds.get(fid)
        if fd is not None:
            return fd
        if len(self.fds) >= _MAX_OPEN:
            self._close(next(iter(self.fds)))
        here = self.files[fid][6]
        if here and fid not in self.started:
            fd = self._open(fid, _WRITE, new=True)
            self.started.add(fid)
        else:  # a file split over devices: the first to come makes its .part, whole
            fd = self._open(fid, _WRITE | os.O_CREAT, new=False)
        self.fds[fid] = fd
        return fd

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str:
        target = self.files[fid]
        # finished here and this record is all of it (a file finished here has its
        # records cover it exactly once: plan/reuse.py ``complete``)
        whole = target[6] and ref.size == target[1] and self.beneath is not None
        if whole and fid not in self.fds and fid not in self.started:
            return self._whole(fid, target, payload)
        if is_zero(payload):  # left as a hole: complete() sizes the file
            return ""
        try:
            end = write_sparse(self._fd(fid), payload, ref.offset)
        except OSError as exc:
            return f"{self.files[fid][0]}: {exc.strerror or exc}"
        if end > self.ends.get(fid, 0):
            self.ends[fid] = end
        return ""

    def _whole(self, fid: int, target: FileTarget, payload: memoryview) -> str:
        """Create, write, finish and rename a file whose one record is ``payload``, in
        the directory opened beneath the root (found open, or opened and kept idle for
        the next files); '' or an error (``fail`` then removes the ``.part``)."""
        dest, size, mode, uid, gid, mtime_ns, _here = target
        leaf = f".parbackup-{fid}{self.tag}.part"  # part_leaf, without the call
        self.started.add(fid)  # a later record of it (none should come) appends only
        head, _slash, name = dest.rpartition("/")
        try:
            dfd = self._idle_dir(head or "/")
            fd = open_part(leaf, _WRITE, dfd, new=True)
            try:
                n = len(payload)
                if 0 < n <= BLOCK and payload[0]:  # most small files: one block, no hole
                    write_all(fd, payload, 0)
                    end = n
                else:
                    end = 0 if is_zero(payload) else write_sparse(fd, payload, 0)
                if end < size:  # zeros at the end: left as a hole
                    os.ftruncate(fd, size)
                if not set_metadata(fd, mode, uid, gid, mtime_ns, root=self.root):
                    self.unowned.append(fid)
            finally:
                os.close(fd)
            os.replace(leaf, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except IsADirectoryError:  # rename(2) will not replace a directory by a file
            return "a directory is in the way"
        except OSError as exc:
            return f"{dest}: {exc.strerror or exc}"
        finally:
            if len(self.idle) > self.keep:
                self._trim(self.keep)
        self.whole.add(fid)
        return ""

    def _close(self, fid: int) -> None:
        fd = self.fds.pop(fid, None)
        path = self.dirs.pop(fid, None)
        if path is not None:  # the directory stays open a while for the next file
            self.users[path] -= 1
            if not self.users[path]:
                del self.users[path]
                self.idle[path] = None
                self._trim(self.keep)
        if fd is not None:
            os.close(fd)

    def complete(self, fid: int) -> str:
        if fid in self.whole:  # done already, in its one record's put
            self.whole.discard(fid)
            return ""
        dest, size, mode, uid, gid, mtime_ns, here = self.files[fid]
        if not here:
            self._close(fid)
            return ""
        try:
            fd = self._fd(fid)  # created now if every record was all zeros
            try:
                if self.ends.pop(fid, 0) < size:  # zeros at the end: left as a hole
                    os.ftruncate(fd, size)
                if not set_metadata(fd, mode, uid, gid, mtime_ns, root=self.root):
                    self.unowned.append(fid)
                if self.beneath is None:
                    os.replace(part_name(dest, fid, self.tag), dest)
                else:  # in the directory opened beneath the root: no symlink followed
                    dfd = self._dir(fid)
                    os.replace(part_leaf(fid, self.tag), os.path.basename(dest), src_dir_fd=dfd,
                               dst_dir_fd=dfd)  # fmt: skip
            finally:
                self._close(fid)
        except IsADirectoryError:  # rename(2) will not replace a directory by a file
            self.fail(fid)
            return "a directory is in the way"
        except OSError as exc:
            self.fail(fid)
            return f"{dest}: {exc.strerror or exc}"
        return ""

    def fail(self, fid: int) -> None:
        self._close(fid)
        self.ends.pop(fid, None)
        self.whole.discard(fid)
        dest, *_rest, here = self.files[fid]
        if here:
            with contextlib.suppress(OSError):
                if self.beneath is None:
                    os.unlink(part_name(dest, fid, self.tag))
                else:
                    self.beneath.unlink(part_name(dest, fid, self.tag))

    def finish(self) -> str:
        for fid in list(self.fds) + list(self.dirs):
            self._close(fid)
        self._trim(0)
        return ""

    def take_unowned(self) -> list[int]:
        taken, self.unowned = self.unowned, []
        return taken


class VerifySink:
    """Only the checks: nothing is written. The base of the sinks that keep nothing
    per file."""

    deferred = False

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str:
        return ""

    def complete(self, fid: int) -> str:
        return ""

    def fail(self, fid: int) -> None:
        return None

    def finish(self) -> str:
        return ""

    def take_unowned(self) -> list[int]:
        return []


class BlockSink(VerifySink):
    """Payloads onto a block device at their offsets; flushed before anything counts."""

    deferred = True

    def __init__(self, spec: BlockSinkSpec) -> None:
        self.path = spec.path
        self.fd = os.open(spec.path, os.O_WRONLY | os.O_CLOEXEC)
        self.unflushed = 0

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str:
        try:
            write_all(self.fd, payload, ref.offset)
            self.unflushed += len(payload)
            if self.unflushed >= _FLUSH_EVERY:  # no flush at the end ever takes long
                os.fsync(self.fd)
                self.unflushed = 0
        except OSError as exc:
            return f"{self.path}: {exc.strerror or exc}"
        return ""

    def finish(self) -> str:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            return f"{self.path}: {exc.strerror or exc}"
        finally:
            os.close(self.fd)
        return ""


class StreamSink(VerifySink):
    """Payloads back to the parent, in the order read; ``emit`` does the flow control."""

    deferred = False

    def __init__(self, emit: Callable[[int, bytes], None]) -> None:
        self.emit = emit

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str:
        self.emit(ref.offset, bytes(payload))
        return ""


def build_sink(spec: SinkSpec, emit: Callable[[int, bytes], None]) -> Sink:
    """The sink a spec describes; ``emit`` sends one chunk to the parent (stream sink)."""
    if isinstance(spec, DirectorySinkSpec):
        return DirectorySink(spec)
    if isinstance(spec, BlockSinkSpec):
        return BlockSink(spec)
    if isinstance(spec, StreamSinkSpec):
        return StreamSink(emit)
    return VerifySink()
