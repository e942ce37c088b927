"""Block devices and disk images as sources (REQUIREMENTS F2).

A block device (a disk, a RAID volume, a loop device) is backed up as one image: a
single FILE entry whose size is the device's size, asked with the BLKGETSIZE64 ioctl (or
found by seeking to the end where the ioctl is missing). Its recorded mode keeps the
S_IFBLK bits, so a catalog or a record header tells an image from a plain file; restore
writes it back as a file, or straight onto a block device given as the target.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from parbackup.errors import SourceError
from parbackup.model import FileEntry, Kind

BLKGETSIZE64 = 0x80081272


def device_size(path: str) -> int:
    """Size in bytes of the block device (or image file) at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        try:
            buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
            return struct.unpack("Q", buf)[0]
        except OSError:
            return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def is_block_device(path: str) -> bool:
    """True when ``path`` is (or is a symlink to) a block device."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def image_entry(path: str, source: str) -> FileEntry:
    """The one entry a block device source yields; ``path`` may be a symlink to it."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return FileEntry(
        path=path,
        kind=Kind.FILE,
        size=device_size(real),
        mode=st.st_mode,
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        source=source,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
        read_from=real if real != path else "",
    )


def is_image(entry: FileEntry) -> bool:
    """True for an entry that was backed up from a block device."""
    return entry.kind is Kind.FILE and stat.S_ISBLK(entry.mode)
