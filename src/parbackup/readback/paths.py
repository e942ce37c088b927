"""Mapping catalogued absolute paths into a restore target without ever escaping it.

A catalog or volume may be damaged or crafted. A path with '..', '.', empty or NUL
components is refused, and every directory on the way down is created or checked with
``lstat`` so a symlink (restored or pre-existing) is never followed to write through it.
"""

from __future__ import annotations

import os
import stat

from parbackup.errors import RestoreError
from parbackup.readback.beneath import Beneath


def target_path(target: str, path: str) -> str:
    """``TARGET/<path without its leading slash>``; RestoreError if it could escape."""
    if not path.startswith("/"):
        raise RestoreError(f"refusing relative catalog path {path!r}")
    if path == "/":
        return target
    tail = path + "/"  # an empty, '.' or '..' component shows as '//', '/./' or '/../'
    if "//" in tail or "/./" in tail or "/../" in tail or "\0" in path:
        raise RestoreError(f"refusing unsafe catalog path {path!r}")
    return target.rstrip("/") + path


def make_target(target: str) -> None:
    """Make the restore target (and the directories above it) if missing.

    A target that is a symlink to a directory is followed, as every restore does; one
    that leads nowhere (itself or a directory above it a symlink to a missing path) is
    a RestoreError naming the link, before anything is made: ``makedirs`` would say
    only "File exists", and making the missing path instead would guess what was meant.
    """
    path = target
    while not os.path.exists(path):
        if os.path.islink(path):
            where = "" if path == target else f" (above the target {target})"
            raise RestoreError(
                f"{path}{where} is a symlink to a missing path ({os.readlink(path)}): make "
                "that directory, or restore into another target"
            )
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    os.makedirs(target, exist_ok=True)


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_KEEP = 64
"""Directories a ``DirMaker`` keeps open (the most recently used): a restore makes
directories in the catalog's order, a tree's walk, so the parent of the next one is
nearly always one of the last few."""


class DirMaker:
    """Creates directories under a target, refusing to pass through symlinks.

    Each directory is made with ``mkdirat`` in its parent, opened once beneath the target
    without following a symlink (readers do the same, readback/sinks.py) and kept open
    for the next directories in it (up to ``_KEEP``); ``close()`` lets them go.
    """

    def __init__(self, target: str) -> None:
        self.target = os.path.abspath(target)
        self.known: set[str] = {self.target}
        self.safe = Beneath(self.target)  # each step made in its checked parent
        self.fds: dict[str, int] = {}
        """Open directories by path, the least recently used first."""

    def _parent(self, directory: str) -> int:
        """``directory`` (made or checked here), opened beneath the target, or found open."""
        fd = self.fds.pop(directory, None)
        if fd is None:
            fd = self.safe.open(directory, _DIR_FLAGS)
            while len(self.fds) >= _KEEP:
                os.close(self.fds.pop(next(iter(self.fds))))
        self.fds[directory] = fd  # the most recently used last
        return fd

    def opened(self, directory: str) -> int:
        """``directory`` made (``ensure``) and opened beneath the target, or found open:
        the maker's own descriptor, good until its next call; never closed by the caller.
        A file made in it needs no lookup of its own (``Beneath.parent``)."""
        self.ensure(directory)
        return self._parent(directory)

    def close(self) -> None:
        """Close the directories kept open."""
        while self.fds:
            os.close(self.fds.popitem()[1])

    def ensure(self, directory: str) -> None:
        """Make ``directory`` (inside the target) and its parents, checking each step.

        Iterative, so a tree thousands of levels deep cannot exhaust the stack.
        """
        if directory in self.known:
            return
        if not directory.startswith(self.target + os.sep):
            raise RestoreError(f"refusing to create {directory!r} outside the target")
        todo = []
        probe = directory
        while probe not in self.known:
            todo.append(probe)
            parent = os.path.dirname(probe)
            if parent == probe:
                raise RestoreError(f"refusing to create {directory!r} outside the target")
            probe = parent
        for step in reversed(todo):
            parent, name = os.path.split(step)
            fd = self._parent(parent)
            try:
                os.mkdir(name, 0o700, dir_fd=fd)  # never follows a symlink there
            except FileExistsError:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise RestoreError(
                        f"refusing to restore through the symlink {step!r}"
                    ) from None
                if not stat.S_ISDIR(st.st_mode):
                    raise RestoreError(f"{step!r} exists and is not a directory") from None
            self.known.add(step)


def is_real_dir(path: str) -> bool:
    """True when ``path`` is a directory and not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
