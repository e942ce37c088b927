"""Block devices and disk images as sources (REQUIREMENTS F2).

A block device (a disk, a RAID volume, a loop device) is backed up as one image: a
single FILE entry whose size is the device's size, asked with the BLKGETSIZE64 ioctl (or
found by seeking to the end where the ioctl is missing). Its recorded mode keeps the
S_IFBLK bits, so a catalog or a record header tells an image from a plain file; restore
writes it back as a file, or straight onto a block device given as the target. The name
may be a symlink to the device (``/dev/disk/by-id/...``): it is recorded as named and
read from the device it leads to.

A device node's times say nothing of its content. What tells a write is the kernel's
count of sectors written to the device (``/sys/dev/block/MAJ:MIN/stat``): the scan
records it as the entry's ``ctime_ns`` (a device node's ctime means nothing for
restore), after flushing the device's page cache (``fsync``) so that writes buffered
earlier are counted before and not during the read; each reader flushes again after
its range and compares. A count that moved, or a write still in flight, makes the image
``inconsistent``: it is not stored as good (the set does not restore it). A device that
is always written (a mounted file system) needs a snapshot (``--pre-command``, LVM).
Not seen: a write to the whole disk inside a partition being read (counted on the
disk, not the partition).
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


def sectors_written(fd: int) -> int:
    """The kernel's count of sectors written to the block device open as ``fd``, after
    flushing what was buffered for it; -1 while a write to it is in flight (or when the
    kernel does not tell): never equal to a count, so the image counts as changed."""
    try:
        os.fsync(fd)  # buffered writes reach the device now, so they are counted now
    except OSError:
        return -1
    rdev = os.fstat(fd).st_rdev
    base = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    try:
        with open(f"{base}/stat", encoding="ascii") as fh:
            written = int(fh.read().split()[6])
        with open(f"{base}/inflight", encoding="ascii") as fh:
            in_flight = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return -1
    return -1 if in_flight else written


def is_block_device(path: str) -> bool:
    """True when ``path`` is (or is a symlink to) a block device."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class _DeviceReader(_LocalReader):
    """An open block device: its identity is the size it had when opened and, as its
    ctime, the sectors written to it so far (see the module docstring)."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(fd)
        self.size = size

    def identity(self) -> Identity:
        st = os.fstat(self.fd)
        written = sectors_written(self.fd)
        return Identity(self.size, st.st_mtime_ns, written, st.st_ino, st.st_rdev)


class BlockDeviceSource(Source):
    """A block device backed up as one image (``SourceSpec`` kind "blockdev")."""

    fields: tuple[str, ...] = ("size", "ctime")

    def check(self, old: Identity, new: Identity) -> None:
        """SourceChanged when the device was written (or resized) since the scan."""
        if old.size != new.size:
            raise SourceChanged(f"block device resized while being read ({old.size} bytes)")
        if old.ctime_ns != new.ctime_ns or new.ctime_ns < 0:
            raise SourceChanged("block device written while being read (use a snapshot)")

    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        path = self.spec.record_root
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
            size = device_size(real)
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
            try:
                written = sectors_written(fd)
            finally:
                os.close(fd)
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
            written,  # as the ctime: see the module docstring
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
