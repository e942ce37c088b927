"""Writes that are whole or fail: ``write_all``, ``write_synced`` and ``fsync_dir``.

``os.write`` and ``os.pwrite`` may take less than they are given (a nearly full tmpfs
takes the pages it still has), so a caller that wrote once and went on could fsync a cut
file and rename it over a good one without a word: a backup's key file lost that way
(crypto/keys.py). Everything here either writes every byte or raises OSError.

``open_regular`` opens a file that must be a regular one without waiting on whatever
else lies under its name (a FIFO planted as a volume or a label).

Imports nothing of parbackup: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading

Buffer = bytes | bytearray | memoryview


def write_all(fd: int, data: Buffer, offset: int | None = None) -> None:
    """Write all of ``data`` to ``fd``: at its position, or at ``offset`` with pwrite (the
    position then neither used nor moved). A short write is continued; one that takes
    nothing raises OSError(ENOSPC), rather than looping for ever."""
    n = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
    if n == len(data):  # nearly always: one call, one comparison (restore's small files)
        return
    view, done = memoryview(data).cast("B"), n
    while done < len(view):
        if n <= 0:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (short write)")
        rest = view[done:]
        n = os.write(fd, rest) if offset is None else os.pwrite(fd, rest, offset + done)
        done += n


class NotDurableError(OSError):
    """``write_synced`` put the new file in place, but its directory could not be synced:
    the new file is whole and read back as such, yet a power cut may bring the old one
    back. Not "left as it was": its callers must not say so."""


def write_synced(path: str | os.PathLike[str], data: Buffer, mode: int = 0o600) -> None:
    """Make ``data`` the whole content of ``path``, durably, or leave ``path`` as it was.

    A temporary file beside it (``NAME.tmp-PID-TID``, created with ``mode``) is written
    whole and fsynced, renamed over ``path``, and the directory fsynced so the new name
    survives a power cut. On a failure before the rename the temporary file is removed
    and the OSError raised: the old file is never replaced by a cut one. A failure of the
    directory's sync, after the rename, is a ``NotDurableError``. The temporary files of
    writers killed before their rename are removed first (``_sweep``).
    """
    path = os.fspath(path)
    _sweep(path)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # a stale temporary file of the same name kept its mode
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fsync_dir(folder)
    except OSError as exc:
        raise NotDurableError(exc.errno, exc.strerror, folder) from exc


def _sweep(path: str) -> None:
    """Remove the ``NAME.tmp-PID-TID`` files beside ``path`` whose PID runs no longer: a
    writer killed between its open and its rename left them, and each name is its own
    (nothing writes it again), so nothing else ever would. A PID of another host (a
    directory shared over the network) may look dead here: its writer then fails, and
    says so; it never leaves a cut file."""
    folder, name = os.path.split(path)
    prefix = f"{name}.tmp-"
    try:
        leftovers = [n for n in os.listdir(folder or ".") if n.startswith(prefix)]
    except OSError:
        return
    for leftover in leftovers:
        pid = leftover[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not pid_running(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, leftover))


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts): the
    owner of a leftover named after its writer's PID may still be at work."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a new, renamed or deleted name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at ``path`` (symlinks followed); OSError
    for anything else. ``open`` of a FIFO waits for a writer for ever (a volume or label
    swapped for one hung verify and restore, deaf to everything but SIGKILL), and a
    device node gives bytes without end: neither is opened for its content."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
