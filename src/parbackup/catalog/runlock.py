"""Advisory lock files beside a catalog: one backup at a time, no prune under a reader.

``<catalog>.lock`` (``RunLock``) is locked with ``flock`` while a backup run writes a set.
The kernel drops the lock when the process dies, however it dies (SIGKILL included), so
a stale lock cannot outlive its holder, and a set still marked 'running' while nobody
holds the lock belongs to a run that died: it is marked 'interrupted' by the next run.

``<catalog>.readers`` (``ReadLock``) keeps a prune from deleting or compacting volumes a
restore, verify or repair is reading: they hold it shared for their whole run, a prune
holds it exclusively. Whoever comes second is refused at once with a message, as a second
backup is by the run lock. A reader that cannot create the file (a catalog on read-only
media, another user's directory) reads without it: nothing can prune such a catalog.

A lock file deleted by hand while held leaves its holder's flock on the deleted inode,
and the next run would lock a new file of that name beside it: so a lock is kept only on
the file its name names once it is taken, and a run that took one is refused while
another process holds a lock on a deleted file of that name (``_deleted_holder``).

Both locks, and SQLite's own journal (``<catalog>-wal``), go by the catalog's name: a
catalog file with a second name (a hard link, or a file bind mount) is refused
(``refuse_other_names``), since runs through two names would neither see each other's
lock nor each other's journal.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import glob
import os
import re
import stat
from collections.abc import Callable
from typing import Protocol

from parbackup.errors import CatalogError

LOCK_SUFFIXES = (".lock", ".readers")
"""The lock files beside a catalog (``RunLock``, ``ReadLock``): a backup leaves them out
of a source that holds the catalog (engine/selecting.py)."""
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""The lock file is opened without following a symlink, and never waits (a FIFO)."""


def refuse_other_names(path: str) -> None:
    """CatalogError if the catalog file at ``path`` (its real path) has another name: a
    hard link, or a file bind mount (``bind_mounted_names``).

    SQLite keeps a catalog's write-ahead log and shared memory beside the name it was
    opened by, and the run and readers' locks are files beside it too: a run through a
    hard link of the catalog would take other locks and write another log over the same
    file, so two runs at once each lose what the other committed (tried in session 21:
    a backup through the link completed while one through the first name was paused, and
    once that one completed, the set of the other had left the catalog). A symlink is
    safe: it is resolved to the one real name. The ``.new-PID`` name under which a new
    catalog is linked into place (store.py ``_create``) is not another name.
    """
    others = 0
    for _ in range(3):  # a new catalog's temporary name may go between the two stats
        try:
            st = os.stat(path)
            making = 0
            for tmp in glob.glob(glob.escape(path) + ".new-*"):
                with contextlib.suppress(OSError):
                    making += os.path.samestat(os.stat(tmp), st)
            others = st.st_nlink - 1 - making
            if os.stat(path).st_nlink == st.st_nlink:
                break
        except OSError:  # gone, or unreadable: the open that follows says so
            return
    if others > 0:
        raise CatalogError(
            f"catalog {path} has {others} other name(s) (a hard link): its journal and"
            " locks go by name, so runs through two names would lose each other's sets:"
            " remove the other name (a symlink names a catalog safely)"
        )
    bound = bind_mounted_names(path)
    if bound:
        raise CatalogError(
            f"catalog {path} has another name by a file bind mount ({'; '.join(bound)}):"
            " its journal and locks go by name, so runs through two names would lose each"
            " other's sets: unmount it (a symlink names a catalog safely)"
        )


_ESCAPED = re.compile(rb"\\([0-7]{3})")
"""An octal escape in /proc/self/mountinfo (a space, tab, newline or backslash)."""


def _unescape(field: bytes) -> str:
    return os.fsdecode(_ESCAPED.sub(lambda m: bytes([int(m[1], 8)]), field))


def bind_mounted_names(path: str) -> list[str]:
    """How a file bind mount gives the file at ``path`` (a real path) a second name, one
    phrase each: a file mounted onto ``path`` (its source is the other name; a deleted
    source is none), or ``path``'s file mounted onto another name.

    A link count cannot tell (a bind mount adds no link): ``/proc/self/mountinfo`` can,
    read once (some 25 us with 21 mounts). Only the mount points of the catalog's own
    file system are stat'ed, looking for its file mounted elsewhere (a mounted file is of
    its source's). A bind mount of a directory above the catalog is no concern: the log
    and locks beside either name are the same files.
    """
    try:
        st = os.stat(path)
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}".encode()
    names = []
    for fields in (ln.split(b" ") for ln in lines):
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == path:
            source = _unescape(fields[3])
            if not source.endswith("//deleted"):
                names.append(f"{source} of its file system is mounted onto it")
            continue
        if fields[2] != dev:
            continue
        with contextlib.suppress(OSError):
            there = os.stat(point)
            if stat.S_ISREG(there.st_mode) and os.path.samestat(there, st):
                names.append(f"it is mounted onto {point}")
    return names


class RunLock:
    """The lock of one catalog; ``acquire`` fails at once with a clear message if held."""

    def __init__(self, catalog_path: str) -> None:
        # realpath: a catalog named through a symlink (or a relative path) locks the
        # same file as under its real name, so the lock cannot be bypassed that way.
        self.path = os.path.realpath(catalog_path) + ".lock"
        self.fd = -1

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def acquire(self) -> bool:
        """Take the lock; CatalogError if another run holds it.

        True when newly taken, False when this object already held it.
        """
        if self.held:
            return False
        catalog = self.path[:-5]
        try:
            fd = _lock_named_file(self.path, catalog, fcntl.LOCK_EX, 0o600)
        except BlockingIOError as exc:
            raise CatalogError(_in_use(catalog, self.path, str(exc))) from None
        orphan = _deleted_holder(fd, self.path, ("WRITE",))
        if orphan:
            _release(fd)
            raise CatalogError(_in_use(catalog, self.path, orphan, deleted=True))
        _name_holder(fd)
        self.fd = fd
        return True

    def lost(self) -> str:
        """Why the lock file no longer guards this run ("" while it does): deleted or
        replaced by another file while held, so another run could lock the new one."""
        if not self.held or _names(self.fd, self.path):
            return ""
        return (
            f"the run lock file {self.path} was deleted or replaced while this run held"
            " it: another run could have started beside it (the lock is never stale: do"
            " not delete it)"
        )

    def release(self) -> None:
        """Drop the lock; never raises."""
        _release(self.fd)
        self.fd = -1


class ReadLocking(Protocol):
    """What a catalog's readers' lock does, on a file (``ReadLock``) or a server."""

    def share(self) -> None:
        """Hold it shared (restore, verify, repair); CatalogError while a prune holds it."""

    def exclusive(self) -> None:
        """Hold it alone (prune); CatalogError while anything reads."""

    def release(self) -> None:
        """Drop it; never raises."""


class ReadLock:
    """The readers' lock of one catalog (see the module docstring): ``share`` for a
    restore, verify or repair, ``exclusive`` for a prune; each fails at once with a clear
    message when the other kind is held, and is a no-op when this object holds it."""

    def __init__(self, catalog_path: str) -> None:
        self.catalog = os.path.realpath(catalog_path)
        self.path = self.catalog + ".readers"
        self.fd = -1

    def share(self) -> None:
        """Hold the lock shared while reading the sets' volumes; without the lock file
        when it cannot be made (read-only media): nothing can prune there."""
        if self.fd >= 0:
            return
        try:
            fd = _lock_named(self.path, self.catalog, fcntl.LOCK_SH, self._open_shared)
        except BlockingIOError as exc:
            raise CatalogError(being_pruned(self.catalog, f" (pid {exc})")) from None
        except OSError:
            return  # a file that cannot be locked: read without it, as without the file
        if fd < 0:
            return
        orphan = _deleted_holder(fd, self.path, ("WRITE",))
        if orphan:  # a prune whose lock file was deleted under it deletes on
            _release(fd)
            raise CatalogError(being_pruned(self.catalog, f" (pid {orphan})"))
        self.fd = fd

    def _open_shared(self) -> int:
        """The lock file opened read-only (-1 when there is none to be had): a shared
        flock needs no write, so a reader never truncates or writes what the name holds,
        and readers of other users (0644) share it too."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_CREAT, 0o644)
        except OSError:
            try:  # not to be made here (read-only media): perhaps it is there
                fd = os.open(self.path, flags)
            except OSError:
                return -1
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return -1
        return fd

    def exclusive(self) -> None:
        """Hold the lock alone, for a prune; CatalogError while anything reads."""
        if self.fd >= 0:
            return
        try:
            fd = _lock_named_file(self.path, self.catalog, fcntl.LOCK_EX, 0o644)
        except BlockingIOError:
            raise CatalogError(being_read(self.catalog)) from None
        orphan = _deleted_holder(fd, self.path, ("READ", "WRITE"))
        if orphan:  # a reader whose lock file was deleted under it reads on
            _release(fd)
            raise CatalogError(being_read(self.catalog, orphan, self.path))
        _name_holder(fd)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock; never raises."""
        _release(self.fd)
        self.fd = -1


def being_pruned(catalog: str, holder: str = "") -> str:
    """Why a reader is refused: a prune holds the readers' lock."""
    return (
        f"the catalog {catalog} is being pruned{holder}: its volumes are being deleted "
        "or compacted; wait for the prune to finish"
    )


def being_read(catalog: str, pid: str = "", path: str = "") -> str:
    """Why a prune is refused: a reader holds the readers' lock (``pid``'s, on ``path``
    deleted under it, when given)."""
    deleted = f" (pid {pid}, whose lock file {path} was deleted)" if pid else ""
    return (
        f"the catalog {catalog} is being read by a restore, verify or repair{deleted}: "
        "nothing is deleted from under it; prune once it has finished"
    )


def _in_use(catalog: str, path: str, holder: str, *, deleted: bool = False) -> str:
    """Why a run is refused: another holds the run lock (on a deleted file, if so)."""
    gone = f", whose lock file {path} was deleted while it ran" if deleted else ""
    return (
        f"the catalog {catalog} is in use by another backup (pid {holder}){gone}; "
        "wait for it to finish, or use another --catalog. The lock is never stale "
        f"(it goes when that process ends): do not delete {path}, which "
        "lets a second run in beside it"
    )


_TRIES = 20
"""How often ``_lock_named_file`` opens the lock file again when the name was deleted or
replaced between its open and its flock (each time another process did so)."""


def _lock_named_file(path: str, catalog: str, how: int, mode: int) -> int:
    """``_lock_named`` on the lock file ``path``, made (``mode``) if missing; any failure
    but a holder's (BlockingIOError) is a CatalogError naming ``catalog``."""
    try:
        return _lock_named(path, catalog, how, lambda: _open_lock_file(path, catalog, mode))
    except BlockingIOError:
        raise
    except OSError as exc:
        raise CatalogError(f"cannot lock the catalog {catalog}: {exc}") from exc


def _lock_named(path: str, catalog: str, how: int, opener: Callable[[], int]) -> int:
    """``flock`` (``how``, never waiting) the file ``path`` names, as ``opener`` opens it;
    the descriptor, or -1 when ``opener`` has none. BlockingIOError (the holder's pid as
    its text) when held, the OSError of any other failed flock; CatalogError naming
    ``catalog`` when the name keeps changing.

    The classic lock-file loop, for writers and readers alike: the lock is kept only if,
    once taken, ``path`` still names the locked inode; a file deleted or replaced between
    the open and the flock is opened again, so two processes never each hold a lock on a
    different inode of the one path (a lock on a deleted file is a lock on nothing)."""
    for _ in range(_TRIES):
        fd = opener()
        if fd < 0:
            return fd
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise BlockingIOError(holder) from None
        except OSError:
            os.close(fd)
            raise
        if _names(fd, path):
            return fd
        _release(fd)  # emptied if ours to write: nobody else can hold a lock on it
    raise CatalogError(f"cannot lock the catalog {catalog}: {path} keeps being replaced")


def _names(fd: int, path: str) -> bool:
    """Whether ``path`` (not followed) still names the file open as ``fd``."""
    try:
        here, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _deleted_holder(fd: int, path: str, kinds: tuple[str, ...]) -> str:
    """The pid of another process holding a ``kinds`` flock on a file once named
    ``path`` and deleted (or replaced) since, or "": the lock it holds guards nothing
    any more, but its run goes on. ``fd`` is this process's locked file that ``path``
    names now. Linux: ``/proc/locks`` names the locked inode and its holder, whose
    ``/proc/PID/fd`` names the file ``path (deleted)``; elsewhere, or a holder this user
    may not look into (another user's process), is not found."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
        mine = os.fstat(fd)
    except OSError:
        return ""
    me, locks = os.getpid(), []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's has "->" first
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            locks.append((parts[3], int(parts[4]), (int(major, 16), int(minor, 16)), int(inode)))
        except ValueError:
            continue
    # The deleted file was in the lock file's directory: on its file system, as
    # /proc/locks writes it (the superblock's device, read off this process's own lock;
    # not stat's st_dev, which on btrfs is a subvolume's and never matches).
    here = next(
        (on for _k, pid, on, ino in locks if pid == me and ino == mine.st_ino),
        (os.major(mine.st_dev), os.minor(mine.st_dev)),
    )
    held = collections.defaultdict(set)
    for kind, pid, on, ino in locks:
        if kind in kinds and on == here and pid != me:
            held[pid].add(ino)
    gone = f"{path} (deleted)"
    return next((str(pid) for pid, inos in held.items() if _has_open(pid, gone, inos)), "")


def _has_open(pid: int, name: str, inos: set[int]) -> bool:
    """Whether process ``pid`` has one of ``inos`` open under ``name``."""
    fds = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for n in os.listdir(fds):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fds}/{n}") == name and os.stat(f"{fds}/{n}").st_ino in inos:
                    return True
    return False


def _open_lock_file(path: str, catalog: str, mode: int = 0o600) -> int:
    """The lock file at ``path``, made if missing; CatalogError naming ``catalog``."""
    try:  # never through a symlink: root would truncate what a planted one names
        fd = os.open(path, _FLAGS, mode)
    except OSError as exc:
        why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise CatalogError(f"cannot lock the catalog {catalog}: {path}: {why}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CatalogError(f"cannot lock the catalog {catalog}: {path} is not a regular file")
    return fd


def _holder(fd: int) -> str:
    """The pid an exclusive holder wrote into the lock file, or "unknown"."""
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _name_holder(fd: int) -> None:
    """Write this pid into a lock file held exclusively. It only names the holder to a
    refused run; the flock is the lock. On a full disk (ENOSPC, EDQUOT) the run goes on
    without it, to fail, if it must, at its first catalog write with a line naming the
    catalog; a bare "No space left on device" naming no file used to end it here."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _release(fd: int) -> None:
    """Unlock and close ``fd``, emptied first where it was written (an exclusive holder's
    pid); a reader's read-only descriptor is never written."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
                os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)
