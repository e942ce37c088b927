"""A directory on any mounted filesystem as a backup device (disk, NVRAM, optical, NFS)."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import ClassVar

from parbackup.devices.base import (
    TMP_MARK,
    Device,
    ObjectInfo,
    ObjectWriter,
    require_still_named,
)
from parbackup.devices.mounts import fstab_path, unmounted_mount_point
from parbackup.devices.url import DeviceURL
from parbackup.errors import DeviceError, DeviceMissingError, UsageError, device_error_from_os
from parbackup.fileio import fsync_dir, open_regular, write_all
from parbackup.model import Capabilities, Label, Space


def _probe(root: str) -> None:
    """Create a file in ``root`` (OSError if it cannot be done), leaving nothing there:
    an unnamed file (O_TMPFILE) where the file system has them, so that a run that ends
    meanwhile (another device's usage error, a kill) leaves no probe behind; else a
    named probe file, created and removed."""
    try:
        fd = os.open(root, _TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if not _TMPFILE or exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    else:
        os.close(fd)
        return
    # pid and thread: the same directory may be opened twice at once (aliases)
    probe = os.path.join(root, f".parbackup-probe-{os.getpid()}-{threading.get_ident()}")
    with open(probe, "wb"):
        pass
    os.unlink(probe)


_TMPFILE = getattr(os, "O_TMPFILE", 0)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
"""What ``link`` fails with where a file system has no hard links: a new label is then
renamed into place, as before session 18 (the later of two runs' labels wins)."""


class _FileWriter(ObjectWriter):
    """Writes straight into the final file; ``checkpoint`` and ``commit`` fsync it.

    ``abort`` removes the file unless a checkpoint made part of it durable (the catalog
    may already point into that part).
    """

    def __init__(self, device: DirectoryDevice, path: str, atomic: bool) -> None:
        self.device, self.path, self.atomic = device, path, atomic
        self.checkpointed = self.done = False
        self.tmp = f"{path}{TMP_MARK}{os.getpid()}" if atomic else path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise device_error_from_os(exc, f"{device.url.display}: create {path}") from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            write_all(self.fd, data)
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.device.url.display}: write") from exc

    def _still_named(self) -> None:
        """The file written is still the one at its name (``require_still_named``)."""
        mine = os.fstat(self.fd)
        try:
            st = os.stat(self.tmp)
            named: tuple | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            named = None
        require_still_named(self.device.url.display, self.tmp, (mine.st_dev, mine.st_ino), named)

    def checkpoint(self) -> bool:
        try:
            os.fsync(self.fd)
            self._still_named()
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.device.url.display}: fsync") from exc
        self.checkpointed = True
        return True

    def commit(self) -> None:
        try:
            os.fsync(self.fd)
            self._still_named()
            os.close(self.fd)
            self.fd = -1
            if self.atomic:
                os.replace(self.tmp, self.path)
            fsync_dir(os.path.dirname(self.path))
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.device.url.display}: commit") from exc
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.atomic or not self.checkpointed:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


class DirectoryDevice(Device):
    """``/path`` or ``file:///path``: objects are files below the directory."""

    scheme = "file"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=16)
    options: ClassVar[frozenset[str]] = frozenset({"allow_unmounted"})
    """``?allow_unmounted=1``: label the directory even where fstab says a disk is to be
    mounted and none is (``check_new_label``)."""

    @classmethod
    def check_url(cls, url: DeviceURL) -> None:
        if url.params.get("allow_unmounted", "1") not in ("0", "1"):
            raise UsageError(f"{url.display}: allow_unmounted is 0 or 1")

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(url)
        self.root = os.path.abspath(url.path or ".")
        self.read_only = False

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise DeviceError(f"bad object name {name!r}")
        return os.path.join(self.root, name)

    def open(self, write: bool = True) -> None:
        """Check the directory; for writing, by creating and removing a probe file.

        Read-only (``write=False``) nothing is written, so a read-only mount works.
        """
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise UsageError(f"{self.url.display}: not a directory (a directory device)")
        if not os.path.isdir(self.root):
            raise DeviceMissingError(
                f"{self.url.display}: no such directory (create it, or mount the disk there)"
            )
        self.read_only = not write
        if not write:
            if not os.access(self.root, os.R_OK | os.X_OK):
                raise DeviceError(f"{self.url.display}: directory is not readable")
            return
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DeviceError(f"{self.url.display}: directory is not writable")
        try:
            _probe(self.root)
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: not writable") from exc

    def close(self) -> None:
        pass

    def check_new_label(self) -> None:
        """Refuse to label a directory that fstab says a disk is mounted on (it or a
        directory above it, below the mount point of the file system it is on now) while
        none is: the backup would fill the file system underneath, and be hidden once
        the disk is mounted over it (devices/mounts.py)."""
        if self.url.params.get("allow_unmounted") == "1":
            return
        found = unmounted_mount_point(self.root)
        if found:
            point, under = found
            raise DeviceMissingError(
                f"{self.url.display}: no disk is mounted on {point} (a mount point in "
                f"{fstab_path()}): not labelled as a new device, which would write the "
                f"backup onto the file system of {under} underneath. Mount the disk; to "
                "back up onto the directory as it is, add ?allow_unmounted=1 to the URL"
            )

    def put_label_if_absent(self, label: Label) -> None:
        """A hard link of the whole, synced label file: it never replaces one another
        run (through another catalog) put there since this one looked. (Written over,
        the other run's set named a label the device no longer carried.)"""
        self._put_label_by_move(label, self._link)

    def _link(self, tmp: str, name: str) -> None:
        """Give the file ``tmp`` the name ``name`` if it is free (DeviceError if not);
        renamed over it where the file system has no hard links (FAT, some network
        file systems: the later of two runs' labels wins there)."""
        src, dst = self._path(tmp), self._path(name)
        try:
            try:
                os.link(src, dst)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                os.replace(src, dst)
            fsync_dir(self.root)
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: write {name}") from exc

    def raw_space(self) -> Space:
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: statvfs") from exc
        return Space(free=st.f_bavail * st.f_frsize, capacity=st.f_blocks * st.f_frsize)

    def _check_writable(self, name: str) -> None:
        if self.read_only:
            raise DeviceError(f"{self.url.display}: opened for reading only; cannot write {name}")

    def create(self, name: str) -> ObjectWriter:
        self._check_writable(name)
        return self.capped(_FileWriter(self, self._path(name), atomic=False))

    def replace(self, name: str) -> ObjectWriter:
        self._check_writable(name)
        return self.capped(_FileWriter(self, self._path(name), atomic=True))

    def read(self, name: str, offset: int, length: int) -> bytes:
        try:
            with os.fdopen(open_regular(self._path(name)), "rb", buffering=0) as fh:
                return os.pread(fh.fileno(), length, offset)
        except FileNotFoundError as exc:
            raise DeviceMissingError(f"{self.url.display}: no object {name}") from exc
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: read {name}") from exc

    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        if len(buf) < length:
            return memoryview(self.read(name, offset, length))
        view, got = memoryview(buf), 0
        try:
            fd = open_regular(self._path(name))
            try:
                while got < length and (n := os.preadv(fd, [view[got:length]], offset + got)):
                    got += n
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise DeviceMissingError(f"{self.url.display}: no object {name}") from exc
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: read {name}") from exc
        return view[:got]

    def open_read(self, name: str, chunk: int = 8 << 20):  # type: ignore[override]
        try:
            return os.fdopen(open_regular(self._path(name)), "rb", buffering=chunk)
        except FileNotFoundError as exc:
            raise DeviceMissingError(f"{self.url.display}: no object {name}") from exc
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: open {name}") from exc

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self._walk(prefix, unfinished=False)

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """The ``NAME.tmp-PID`` files of ``replace`` writers that never committed."""
        return self._walk(prefix, unfinished=True)

    def _walk(self, prefix: str, *, unfinished: bool) -> list[ObjectInfo]:
        """Files under the root whose names start with ``prefix``: objects, or leftovers."""
        out: list[ObjectInfo] = []
        base = os.path.dirname(prefix)
        start = os.path.join(self.root, base) if base else self.root
        if not os.path.isdir(start):
            return out
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                name = os.path.relpath(full, self.root)
                if name.startswith(prefix) and (TMP_MARK in fn) == unfinished:
                    try:
                        out.append(ObjectInfo(name, os.path.getsize(full)))
                    except OSError:
                        continue
        return out

    def delete(self, name: str) -> None:
        """Remove the file, then its directory if that is left empty (``sets/<id>/``)."""
        self._check_writable(name)
        path = self._path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: delete {name}") from exc
        parent = os.path.dirname(path)
        if os.path.dirname(name) and parent != self.root:
            with contextlib.suppress(OSError):  # not empty (or gone): keep it
                os.rmdir(parent)

    def size(self, name: str) -> int:
        try:
            return os.path.getsize(self._path(name))
        except FileNotFoundError as exc:
            raise DeviceMissingError(f"{self.url.display}: no object {name}") from exc
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: stat {name}") from exc
