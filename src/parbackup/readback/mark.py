"""A restore's mark in its target, so the same restore run again after a crash finishes.

A restore into a directory keeps ``TARGET/.parbackup-restore`` while it runs: a small
JSON document naming the set and the selection (``--include`` globs) and the pid, with
an ``flock`` held on it. It is removed once a restore has ended with no file damaged.
A restore killed with SIGKILL (or by a power loss, or one that ended with damage) leaves
it, and the kernel drops its lock.

The next restore reads it first:

- held by a live restore: this one stops at once (two restores never write one target);
- left by a restore of the same set and selection: everything at that set's paths in
  the target is that restore's own work (it refused existing files, or was told
  ``--overwrite``), so this one writes those paths again as ``--overwrite`` would and
  removes the ``.part`` files the killed run left; nothing else in the target is touched;
- otherwise (none, another set, another selection): the usual rule, existing files are
  refused without ``--overwrite``. A refused restore leaves the mark as it found it.

A target where the mark cannot be made or written (no room, no permission at its top)
is restored into without one: the mark is a help for the next run, never a condition.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Sequence

from parbackup.errors import RestoreError
from parbackup.fileio import write_all
from parbackup.readback.paths import make_target

MARK = ".parbackup-restore"


class RestoreMark:
    """The mark of one running restore: locked on ``take``, written on ``claim``, removed
    (or left for the next run) on ``release``."""

    def __init__(self, target: str, fd: int, resumes: bool, found: bool) -> None:
        self.target, self.fd = target, fd
        self.resumes = resumes
        """A killed restore of the same set and selection left this target."""
        self.found = found
        self.claimed = self.released = False

    def __enter__(self) -> RestoreMark:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release(finished=False)

    @classmethod
    def take(cls, target: str, set_id: str, includes: Sequence[str]) -> RestoreMark:
        """Lock ``target``'s mark (made if missing, with the target); RestoreError when a
        live restore holds it."""
        make_target(target)
        while True:
            try:
                fd = _open(target)
            except OSError:
                return cls(target, -1, resumes=False, found=True)  # no mark to keep
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read(fd).get("pid", "?")
                os.close(fd)
                raise RestoreError(
                    f"{target}: another restore (pid {pid}) is writing into it; "
                    "wait for it to finish, or restore into another target"
                ) from None
            if os.fstat(fd).st_nlink:  # not a mark its restore removed meanwhile
                break
            os.close(fd)
        found = _read(fd)
        same = found.get("set") == set_id and found.get("include") == sorted(includes)
        return cls(target, fd, resumes=same, found=os.fstat(fd).st_size > 0)

    def claim(self, set_id: str, includes: Sequence[str]) -> None:
        """Name this restore in the mark, before anything is written into the target."""
        if self.fd < 0:
            return
        doc = {"set": set_id, "include": sorted(includes), "pid": os.getpid()}  # any order
        try:
            os.ftruncate(self.fd, 0)
            write_all(self.fd, json.dumps(doc).encode(), 0)
        except OSError:  # a full target: restore what fits, without a mark (nor a cut one)
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            return
        self.claimed = True

    def release(self, finished: bool) -> None:
        """Drop the lock; remove the mark when this restore ended with nothing damaged,
        or when it made the mark and never wrote into the target (it was refused). Once."""
        if self.released or self.fd < 0:
            return
        self.released = True
        if (finished and self.claimed) or (not self.claimed and not self.found):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.target, MARK))
        os.close(self.fd)


def _open(target: str) -> int:
    """The mark's descriptor, opened (made if missing) in ``target``, never through a
    symlink; OSError (no mark kept) when the name holds anything but a regular file with
    no other name: a hard link to a file elsewhere is never truncated and written."""
    dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(MARK, flags, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EEXIST, "not a restore's mark", MARK)
    return fd


def _read(fd: int) -> dict:
    """The mark's document; {} when empty or not one (a mark is only ever a hint)."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
