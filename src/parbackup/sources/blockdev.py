"""Block devices and disk images as sources (REQUIREMENTS F2).

A block device (a disk, a RAID volume, a loop device) is backed up as one image: a
single FILE entry whose size is the device's size, asked with the BLKGETSIZE64 ioctl (or
found by seeking to the end where the ioctl is missing). Its recorded mode keeps the
S_IFBLK bits, so a catalog or a record header tells an image from a plain file; restore
writes it back as a file, or straight onto a block device given as the target. The name
may be a symlink to the device (``/dev/disk/by-id/...``): it is recorded as named and
read from the device it leads to.

A device node's times say nothing of its content, so no change is ever detected on
one (``fields`` is empty): back up a snapshot of a live device instead.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from parbackup.entries import FILE, Entries
from parbackup.errors import SourceError
from parbackup.sources.base import ErrorFunc, FileReader, Identity, Source, SourceChanged
from parbackup.sources.local import _LocalReader

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


class _DeviceReader(_LocalReader):
    """An open block device: its identity is the size it had when opened."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(fd)
        self.size = size

    def identity(self) -> Identity:
        st = os.fstat(self.fd)
        return Identity(self.size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_rdev)


class BlockDeviceSource(Source):
    """A block device backed up as one image (``SourceSpec`` kind "blockdev")."""

    fields: tuple[str, ...] = ()

    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        path = self.spec.record_root
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
            size = device_size(real)
        except (OSError, SourceError) as exc:
            on_error(path, getattr(exc, "strerror", None) or str(exc))
            return
        out.append(
            os.fsencode(path),
            FILE,
            size,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_rdev,
            index,
        )

    def open(self, path: str | bytes, expect: Identity | None = None) -> FileReader:
        path = os.fsdecode(path)
        real = os.path.realpath(path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError(exc.strerror or str(exc)) from exc
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or (expect is not None and st.st_rdev != expect.dev):
            os.close(fd)
            raise SourceChanged("no longer the block device the scan saw")
        return _DeviceReader(fd, device_size(real))
