"""Scratch directories in ``$TMPDIR`` that a killed command does not leave for ever.

Some work needs room on the side: a catalog copy before it goes to the devices, a lost
device's volumes rebuilt from parity (``rebuild-catalog``, a restore around a lost
device when a survivor is a tape), which can be a whole device's worth of bytes. A
``tempfile.TemporaryDirectory`` is removed when its ``with`` ends, but SIGKILL (or a
power cut) runs no clean-up, and nothing ever looked at it again.

``directory()`` makes ``PREFIX...`` with a lock file inside that its process holds
(``flock``) until it removes the directory; the file takes its name only once locked.
The kernel drops the lock of a process that is gone, so every ``directory()`` first
removes each such directory whose lock nobody holds: the next command that needs
scratch room (every backup does, for its catalog copy) takes away what a killed one
left. A directory another live process holds is
left alone, whatever host or PID namespace shares ``$TMPDIR``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

LOCK = ".parbackup-scratch.lock"
"""The lock file in every scratch directory."""


@contextlib.contextmanager
def directory(prefix: str = "parbackup-") -> Iterator[str]:
    """A new scratch directory (its path), removed when the ``with`` ends."""
    sweep()
    path = tempfile.mkdtemp(prefix=prefix)
    # The lock file gets its name only once it is locked: a sweep in another process
    # that opened it between its creation and the flock found it free and removed the
    # directory this process was about to use (seen as a rebuild's scratch file gone,
    # under load, with two test runs sharing $TMPDIR).
    making = os.path.join(path, LOCK + ".new")
    fd = os.open(making, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(making, os.path.join(path, LOCK))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep(folder: str | None = None) -> list[str]:
    """Remove the scratch directories in ``folder`` ($TMPDIR) that no process holds; the
    paths removed. A directory without the lock file (one just being made, or left by
    an older version) is not touched."""
    folder = folder or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith("parbackup-"):
            continue
        with contextlib.suppress(OSError):
            if not entry.is_dir(follow_symlinks=False):
                continue
            lock = os.path.join(entry.path, LOCK)
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: held
                shutil.rmtree(entry.path)
                removed.append(entry.path)
            finally:
                os.close(fd)
    return removed
