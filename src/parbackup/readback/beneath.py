"""Opening names inside a restore target without following any symlink on the way.

Checking each directory with ``lstat`` and then opening the file by its path leaves a
window: whoever may write in the target swaps a directory for a symlink in between, and
the write lands elsewhere (a root restore into a user's directory could write, chmod or
unlink any file). Here every name below the target is resolved by the kernel in one step
that refuses symlinks: ``openat2`` with ``RESOLVE_NO_SYMLINKS`` on the target's real path
(Linux 5.6), or where that is missing a walk one component at a time with ``O_NOFOLLOW``.
The target itself (the path the user named, symlinks and all) is resolved once and
trusted. Renames, unlinks and symlinks are done relative to the parent directory's
descriptor (``dir_fd``), so no path is looked up twice. Nothing is held open between
calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
from collections.abc import Iterator

_SYS_OPENAT2 = 437  # the same on every architecture (the unified syscall table)
_RESOLVE_NO_SYMLINKS = 0x04
_AT_FDCWD = -100
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc["syscall"]  # a function object of its own (indexing does not share one)
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_HOW_SIZE = ctypes.sizeof(_OpenHow)
_hows: dict[tuple[int, int], tuple[_OpenHow, int]] = {}
"""One ``open_how`` per (flags, mode), made once and only read after: a restore opens
tens of thousands of directories, and building the ctypes arguments anew each time cost
more than the system call (about 9 of every 20 us)."""
_openat2_works = [True]
_UNTIDY = re.compile(r"/\.{0,2}(/|$)")
"""An empty, '.' or '..' component, or a trailing slash: such a path takes the slow way."""


def _how(flags: int, mode: int) -> int:
    """The address of the ``open_how`` for ``flags`` and ``mode``."""
    key = (flags, mode if flags & os.O_CREAT else 0)
    known = _hows.get(key)
    if known is None:
        how = _OpenHow(key[0], key[1], _RESOLVE_NO_SYMLINKS)
        known = _hows[key] = (how, ctypes.addressof(how))
    return known[1]


def _openat2(path: str, flags: int, mode: int) -> int:
    fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), _how(flags, mode), _HOW_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _walk(root: str, rel: str, flags: int, mode: int) -> int:
    """The same without openat2: one component at a time, never following a symlink."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in rel.split("/")[:-1]:
            nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(rel.split("/")[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
    finally:
        os.close(fd)


class Beneath:
    """Names under ``root`` (absolute paths as restore computes them), each resolved
    without following a symlink below ``root``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.real = os.path.realpath(root)
        self.prefix = self.root.rstrip("/") + "/"

    def _rel(self, path: str) -> str:
        if path.startswith(self.prefix) and not _UNTIDY.search(path):
            return path[len(self.prefix) :]  # the common case, without relpath's work
        rel = os.path.relpath(path, self.root)
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise OSError(errno.EXDEV, "outside the restore target", path)
        return rel

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """``os.open(path, flags, mode)``, refusing a symlink anywhere below the root."""
        rel = self._rel(path)
        flags |= os.O_CLOEXEC
        if _openat2_works[0]:
            try:
                return _openat2(os.path.join(self.real, rel), flags, mode)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
                _openat2_works[0] = False  # an old kernel, or a filter that forbids it
        if rel == ".":
            return os.open(self.real, flags, mode)
        return _walk(self.real, rel, flags, mode)

    def makedirs(self, path: str, mode: int = 0o700) -> int:
        """An ``O_PATH`` descriptor of the directory ``path``, made first with any parent
        missing (``mkdirat`` in each parent opened without following a symlink): a
        reader makes its files' directories itself, while the restore makes the rest.
        A symlink or a file in the way is an OSError, never passed through."""
        rel = self._rel(path)
        fd = os.open(self.real, _DIR_FLAGS)
        try:
            for part in [] if rel == "." else rel.split("/"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the directory holding ``path``, its last name), for one call."""
        directory, name = os.path.split(path)
        fd = self.open(directory, _DIR_FLAGS)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (one directory) through the directory's descriptor."""
        with self.parent(dst) as (fd, name):
            os.replace(os.path.basename(src), name, src_dir_fd=fd, dst_dir_fd=fd)

    def unlink(self, path: str) -> None:
        with self.parent(path) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def symlink(self, link: str, path: str) -> None:
        """Make ``path`` a symlink to ``link``, replacing what is there (not a directory)."""
        with self.parent(path) as (fd, name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
            os.symlink(link, name, dir_fd=fd)

    def lstat(self, path: str) -> os.stat_result:
        with self.parent(path) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        with self.parent(path) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def is_real_dir(self, path: str) -> bool:
        """A directory, and not a symlink to one (False when it cannot be reached)."""
        try:
            return stat.S_ISDIR(self.lstat(path).st_mode)
        except OSError:
            return False
