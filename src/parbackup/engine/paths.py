"""Mapping catalogued absolute paths into a restore target without ever escaping it.

A catalog or volume may be damaged or crafted. A path with '..', '.', empty or NUL
components is refused, and every directory on the way down is created or checked with
``lstat`` so a symlink (restored or pre-existing) is never followed to write through it.
"""

from __future__ import annotations

import os
import stat

from parbackup.errors import RestoreError


def target_path(target: str, path: str) -> str:
    """``TARGET/<path without its leading slash>``; RestoreError if it could escape."""
    if not path.startswith("/"):
        raise RestoreError(f"refusing relative catalog path {path!r}")
    parts = path.split("/")[1:]
    if (not parts or any(p in ("", ".", "..") or "\0" in p for p in parts)) and path != "/":
        raise RestoreError(f"refusing unsafe catalog path {path!r}")
    return os.path.join(target, *[p for p in parts if p])


class DirMaker:
    """Creates directories under a target, refusing to pass through symlinks."""

    def __init__(self, target: str) -> None:
        self.target = os.path.abspath(target)
        self.known: set[str] = {self.target}

    def ensure(self, directory: str) -> None:
        """Make ``directory`` (inside the target) and its parents, checking each step."""
        if directory in self.known:
            return
        parent = os.path.dirname(directory)
        if parent == directory or not directory.startswith(self.target + os.sep):
            raise RestoreError(f"refusing to create {directory!r} outside the target")
        self.ensure(parent)
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            os.mkdir(directory, 0o700)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise RestoreError(f"refusing to restore through the symlink {directory!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise RestoreError(f"{directory!r} exists and is not a directory")
        self.known.add(directory)
