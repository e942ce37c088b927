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


def special_entry(path: str, st: os.stat_result, source: str) -> FileEntry | None:
    """The entry of a FIFO, socket or device node; None for any other type."""
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        kind, link = Kind.FIFO, ""
    elif stat.S_ISSOCK(mode):
        kind, link = Kind.SOCKET, ""
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind, link = Kind.DEVICE, str(st.st_rdev)
    else:
        return None
    return FileEntry(
        path=path,
        kind=kind,
        size=0,
        mode=mode,
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        link=link,
        source=source,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
    )


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
