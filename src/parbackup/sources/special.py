"""Entries for what is not a plain file, directory or symlink: hard links, FIFOs,
sockets and device nodes.

These are recorded (path, metadata, and for a device node its number) and recreated on
restore where the restoring user may; their contents are never read, so a FIFO cannot
hang a backup. A regular file with several names is backed up once: the first name met
in the scan is a FILE, every later name a HARDLINK whose ``link`` is that first path.
"""

from __future__ import annotations

import os
import stat

from parbackup.model import FileEntry, Kind


def special_kind(st: os.stat_result) -> tuple[Kind, str] | None:
    """(kind, link) of a FIFO, socket or device node (link: its device number); else None."""
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        return Kind.FIFO, ""
    if stat.S_ISSOCK(mode):
        return Kind.SOCKET, ""
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return Kind.DEVICE, str(st.st_rdev)
    return None


class HardLinks:
    """Remembers regular files with several names so later names become HARDLINKs."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, int], str] = {}

    def resolve(self, entry: FileEntry, st: os.stat_result) -> FileEntry:
        """``entry`` itself, or a HARDLINK to the first name of the same inode."""
        if entry.kind is not Kind.FILE or st.st_nlink < 2:
            return entry
        key = (st.st_dev, st.st_ino)
        first = self.first.setdefault(key, entry.path)
        if first == entry.path:
            return entry
        return FileEntry(
            path=entry.path,
            kind=Kind.HARDLINK,
            size=0,
            mode=entry.mode,
            mtime_ns=entry.mtime_ns,
            uid=entry.uid,
            gid=entry.gid,
            link=first,
            source=entry.source,
            ctime_ns=entry.ctime_ns,
            ino=entry.ino,
        )
