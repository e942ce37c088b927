"""Whether a directory lies on a disk that should be mounted there and is not.

A disk not mounted leaves its mount point an empty directory of the file system
underneath (usually the root file system): a backup onto it would label a new device
there and fill that file system, or hide the set once the disk is mounted over it
(what Bareos' "Requires Mount" and rsnapshot's ``no_create_root`` guard against). A
directory device about to be labelled (devices/local.py) asks ``unmounted_mount_point``:
a mount point listed in fstab (``PARBACKUP_FSTAB``, by default ``/etc/fstab``) at the
directory or between it and the mount point of the file system it is on now is a disk
that is not mounted. Mounted means listed in ``/proc/self/mountinfo`` (this process's
mount namespace); where that file is missing, ``os.path.ismount``.
"""

from __future__ import annotations

import os
import re

FSTAB_ENV = "PARBACKUP_FSTAB"
"""Names the fstab file read instead of ``/etc/fstab`` (tests point it at their own)."""

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """A path as fstab and mountinfo write it (``\\040`` for a space) made plain."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def fstab_path() -> str:
    return os.environ.get(FSTAB_ENV) or "/etc/fstab"


def fstab_mount_points(path: str) -> set[str]:
    """The directories ``path`` (an fstab file) mounts something on; unreadable: none."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/"):
            out.add(os.path.normpath(_unescape(fields[1])))
    return out


def mounted_points() -> set[str] | None:
    """Every mount point of this process's namespace; None without ``/proc``."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return {os.path.normpath(_unescape(ln.split()[4])) for ln in lines if len(ln.split()) > 4}


def unmounted_mount_point(directory: str) -> tuple[str, str] | None:
    """(fstab mount point, where ``directory``'s file system is mounted) when a mount
    point listed in fstab lies at ``directory`` or between it and the mount point of the
    file system it is on now, and is not mounted; else None."""
    wanted = fstab_mount_points(fstab_path())
    if not wanted:
        return None
    mounted = mounted_points()
    path = os.path.realpath(directory)
    between: list[str] = []
    while True:
        if os.path.ismount(path) if mounted is None else path in mounted:
            break
        between.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in between:
        if d in wanted:
            return d, path
    return None
