"""A directory on an SSH host as a backup device, over SFTP (paramiko; the ``sftp`` extra).

``sftp://[user@]host[:port]/path`` (``/~/dir`` is relative to the login directory).
Logging in (``~/.ssh/config``, ``?identity=``, ``?known_hosts=``, ``?timeout=``, host key
checks) and the mapping of SFTP errors are devices/sftplink.py's, shared with the SFTP
source.

Writes are pipelined (no round trip per request) and confirmed at each checkpoint and
commit with ``fsync@openssh.com``; ``replace`` writes a temporary name and renames it
with ``posix-rename@openssh.com``; a new label is moved into place with plain ``rename``,
which never replaces another run's. Free space comes from ``statvfs@openssh.com``.
A dropped connection raises TransientDeviceError and reconnects on the next call, so the
engine's retry wrapper (devices/retry.py) retries reads, listings and opening (5 tries).
``?retries=N`` makes the device own those retries instead: N more tries with backoff
inside the device, after which the error is permanent (``gave up after N+1 attempts``),
so the engine's wrapper does not multiply them by 5. A write stream cannot be resumed, so a
write that loses its connection raises a permanent DeviceError and the engine fails the
device over.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from parbackup.devices.base import TMP_MARK, Device, ObjectInfo, ObjectWriter, require_still_named
from parbackup.devices.sftplink import (
    SFTP_ERRORS,
    connect,
    map_error,
    map_status,
    read_range,
    remote_path,
    timeout_of,
)
from parbackup.devices.url import DeviceURL
from parbackup.errors import DeviceError, DeviceFullError, UsageError
from parbackup.model import Capabilities, Label, Space

_BUFFER = 1 << 20
_T = TypeVar("_T")


class _SftpWriter(ObjectWriter):
    """Pipelined writes into one remote file; confirmed by fsync at checkpoint and commit."""

    def __init__(self, device: SFTPDevice, name: str, atomic: bool) -> None:
        self.device, self.name, self.atomic = device, name, atomic
        self.path = device._path(name)
        self.tmp = (
            f"{self.path}{TMP_MARK}{os.getpid()}-{threading.get_ident()}" if atomic else self.path
        )
        self.checkpointed = self.done = False
        self.sftp = device._client()
        self.fh = device._call(f"create {name}", lambda: self._open(device))

    def _open(self, device: SFTPDevice) -> paramiko.SFTPFile:
        device._makedirs(posixpath.dirname(self.path))
        fh = self.sftp.open(self.tmp, "wb", bufsize=_BUFFER)
        fh.set_pipelined(True)
        return fh

    def _do(self, what: str, fn: Callable[[], None]) -> None:
        """A write-side call; a failure on a full remote disk is reported as such."""
        try:
            self.device._call(f"{what} {self.name}", fn, retry=False)
        except DeviceError as exc:
            if exc.transient:  # a write stream cannot be resumed on a new connection
                raise DeviceError(str(exc)) from exc
            if isinstance(exc, DeviceFullError) or not self.device.full():
                raise
            raise DeviceFullError(f"{exc} (the remote disk is full)") from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._do("write", lambda: self.fh.write(bytes(data)))

    def _sync(self) -> None:
        """Send what is buffered, wait for every write to be acknowledged, fsync."""
        self.fh.flush()
        try:
            self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", self.fh.handle)
        except OSError as exc:
            if exc.errno is not None or "unsupported" not in str(exc).lower():
                raise
            self.fh.stat()  # no fsync extension: at least every write is acknowledged
        self.fh._check_exception()
        self._still_named()

    def _still_named(self) -> None:
        """The remote file written is still the one at its name (``require_still_named``;
        SFTP shows no inode: its size and mtime stand in)."""
        mine = self.fh.stat()
        try:
            st = self.sftp.stat(self.tmp)
            named: tuple | None = (st.st_size, st.st_mtime)
        except FileNotFoundError:
            named = None
        require_still_named(self.device.url.display, self.tmp, (mine.st_size, mine.st_mtime), named)

    def checkpoint(self) -> bool:
        self._do("write", self._sync)
        self.checkpointed = True
        return True

    def commit(self) -> None:
        def finish() -> None:
            self._sync()
            self.fh.close()
            if self.atomic:
                self.sftp.posix_rename(self.tmp, self.path)

        self._do("commit", finish)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(Exception):
            self.fh.close()
        self.fh._closed = True  # a failed close must not be retried when paramiko collects it
        if self.atomic or not self.checkpointed:
            with contextlib.suppress(Exception):
                self.sftp.remove(self.tmp)


class SFTPDevice(Device):
    """``sftp://[user@]host[:port]/path``; see the module docstring."""

    scheme = "sftp"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=4)
    options = frozenset({"identity", "known_hosts", "timeout", "retries"})

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(url)
        self.timeout = timeout_of(url)
        self.retries = int(url.params.get("retries", "0"))  # 0: the engine's wrapper retries
        self.ssh: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self.root = ""
        self._made: set[str] = set()
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        client, sftp = connect(self.url, self.timeout)
        path = remote_path(self.url)
        self.ssh, self.sftp = client, sftp
        try:
            self.root = sftp.normalize(path)
        except OSError as exc:
            raise map_status(exc, f"{self.url.display}: {path}") from exc

    def _client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self.sftp is None:
                self._connect()
            assert self.sftp is not None
            return self.sftp

    def _drop(self) -> None:
        with self._lock:
            client, self.ssh, self.sftp = self.ssh, None, None
            self._made.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _call(self, what: str, fn: Callable[[], _T], *, retry: bool = True) -> _T:
        """Run ``fn``; map errors; reconnect and retry idempotent calls when the link drops."""
        attempts = 1 + (self.retries if retry else 0)
        where = f"{self.url.display}: {what}"
        for attempt in range(attempts):
            try:
                return fn()
            except DeviceError as exc:
                error, cause = exc, exc.__cause__
            except SFTP_ERRORS as exc:
                error, cause = map_error(exc, where, self.ssh), exc
                if error.transient:
                    self._drop()
            if not error.transient:
                raise error from cause
            if attempt == attempts - 1:
                if attempts > 1:  # this device owned the retries: no other layer repeats them
                    raise DeviceError(f"{error} (gave up after {attempts} attempts)") from cause
                raise error from cause
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def full(self) -> bool:
        """True when the remote filesystem has (next to) no room left."""
        try:
            free = self.raw_space().free
        except DeviceError:
            return False
        return free is not None and free < _BUFFER

    @classmethod
    def check_url(cls, url: DeviceURL) -> None:
        if not url.host:
            raise UsageError(f"{url.display}: no host (use sftp://[user@]host[:port]/path)")

    def open(self, write: bool = True) -> None:
        """Connect and check the directory exists; no write probe, so ``write`` changes nothing."""

        def check() -> None:
            sftp = self._client()
            st = sftp.stat(self.root)
            if not stat.S_ISDIR(st.st_mode or 0):
                raise DeviceError(f"{self.url.display}: not a directory")

        self._call("open", check)

    def close(self) -> None:
        self._drop()

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise DeviceError(f"bad object name {name!r}")
        return posixpath.join(self.root, name)

    def _makedirs(self, path: str) -> None:
        if path in self._made or path == self.root:
            return
        sftp = self._client()
        try:
            if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                self._made.add(path)
                return
        except FileNotFoundError:
            pass
        self._makedirs(posixpath.dirname(path))
        with contextlib.suppress(OSError):
            sftp.mkdir(path)
        self._made.add(path)

    # -- the seven -------------------------------------------------------------------------
    def raw_space(self) -> Space:
        def ask() -> Space:
            sftp = self._client()
            try:
                kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", self.root)
            except OSError as exc:
                if exc.errno is None:
                    return Space(free=None, capacity=None)  # extension not offered
                raise
            if kind != CMD_EXTENDED_REPLY:
                return Space(free=None, capacity=None)
            _bsize, frsize, blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
            return Space(free=bavail * frsize, capacity=blocks * frsize)

        return self._call("statvfs", ask)

    def create(self, name: str) -> ObjectWriter:
        return self.capped(_SftpWriter(self, name, atomic=False))

    def replace(self, name: str) -> ObjectWriter:
        return self.capped(_SftpWriter(self, name, atomic=True))

    def put_label_if_absent(self, label: Label) -> None:
        """Moved into place by SFTPv3 ``rename``, which fails where the name exists (the
        server links, or looks then renames), unlike ``posix-rename``."""

        def rename(tmp: str, name: str) -> None:
            move = lambda: self._client().rename(self._path(tmp), self._path(name))  # noqa: E731
            self._call(f"rename {tmp}", move, retry=False)

        self._put_label_by_move(label, rename)

    def read(self, name: str, offset: int, length: int) -> bytes:
        def fetch() -> bytes:
            with self._client().open(self._path(name), "rb") as fh:
                size = fh.stat().st_size or 0
                length_ = max(0, min(length, size - offset))
                if not length_:
                    return b""
                return read_range(fh, offset, length_)

        return self._call(f"read {name}", fetch)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self._walk(prefix, unfinished=False)

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """The ``NAME.tmp-PID-TID`` files of ``replace`` writers that never committed."""
        return self._walk(prefix, unfinished=True)

    def _walk(self, prefix: str, *, unfinished: bool) -> list[ObjectInfo]:
        """Files under the root whose names start with ``prefix``: objects, or leftovers."""

        def walk() -> list[ObjectInfo]:
            sftp = self._client()
            out: list[ObjectInfo] = []
            base = posixpath.dirname(prefix)
            todo = [base]
            while todo:
                rel = todo.pop()
                try:
                    entries = sftp.listdir_attr(
                        posixpath.join(self.root, rel) if rel else self.root
                    )
                except FileNotFoundError:
                    continue
                for entry in entries:
                    name = posixpath.join(rel, entry.filename) if rel else entry.filename
                    if stat.S_ISDIR(entry.st_mode or 0):
                        todo.append(name)
                    elif name.startswith(prefix) and (TMP_MARK in entry.filename) == unfinished:
                        out.append(ObjectInfo(name, entry.st_size or 0))
            return sorted(out, key=lambda o: o.name)

        return self._call("list", walk)

    def delete(self, name: str) -> None:
        """Remove the file, then its directory if that is left empty (``sets/<id>/``)."""

        def remove() -> None:
            path = self._path(name)
            with contextlib.suppress(FileNotFoundError):
                self._client().remove(path)
            if posixpath.dirname(name):
                with contextlib.suppress(OSError):  # not empty (or gone): keep it
                    self._client().rmdir(posixpath.dirname(path))
                self._made.discard(posixpath.dirname(path))

        self._call(f"delete {name}", remove)

    def size(self, name: str) -> int:
        return self._call(
            f"stat {name}", lambda: self._client().stat(self._path(name)).st_size or 0
        )
