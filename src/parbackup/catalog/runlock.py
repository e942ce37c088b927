"""One backup at a time per catalog: an advisory lock file beside the catalog.

``<catalog>.lock`` is locked with ``flock`` while a backup run writes a set. The kernel
drops the lock when the process dies, however it dies (SIGKILL included), so a stale
lock cannot outlive its holder, and a set still marked 'running' while nobody holds the
lock belongs to a run that died: it is marked 'interrupted' by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

from parbackup.errors import CatalogError

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""The lock file is opened without following a symlink, and never waits (a FIFO)."""


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
        try:  # never through a symlink: root would truncate what a planted one names
            fd = os.open(self.path, _FLAGS, 0o600)
        except OSError as exc:
            why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise CatalogError(
                f"cannot lock the catalog {self.path[:-5]}: {self.path}: {why}"
            ) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{self.path} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CatalogError(
                f"the catalog {self.path[:-5]} is in use by another backup (pid {holder}); "
                "wait for it to finish, or use another --catalog"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise CatalogError(f"cannot lock the catalog {self.path[:-5]}: {exc}") from exc
        # The pid only names the holder to a refused run; the flock is the lock. On a
        # full disk (ENOSPC, EDQUOT) the run goes on without it, to fail, if it must, at
        # its first catalog write with a line naming the catalog; a bare "No space left on
        # device" naming no file used to end it here.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        """Drop the lock; never raises."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
