"""A fault-injecting wrapper around a real device, for faults that cannot be made real.

``faulty+KIND://...?FAULTS`` opens the device ``KIND://...`` (minus the fault options) and
wraps it. Only bytes written to backup volumes (objects under ``sets/``) count, so labels
and catalog copies do not move the fault. Options:

``fail_after=SIZE``  after SIZE volume bytes, every write fails (the part of the call up to
                     SIZE is written first, as a real device would); so does every later
                     write, checkpoint, commit and read of a volume: a broken device stays
                     broken.
``error=KIND``       what the failure raises: ``eio`` (default), ``enospc``, ``erofs``, or
                     ``conn`` (a lost connection: TransientDeviceError every time, so the
                     retry wrapper gives up after its attempts).
``hang_after=SIZE``  after SIZE volume bytes the write blocks for ever, and so do
                     ``close`` and ``abort`` (a frozen host, a hung NFS mount).
``hang_catalog=1``   writing the catalog copy (``catalog/``) blocks for ever, and so does
                     everything after it: a device that hangs once its volume is done.
``flaky=K``          every K-th write raises TransientDeviceError once, writing nothing.
``fail_open=1``      ``open`` fails: the device is unreachable before the backup starts.
``hang_open=1``      ``open`` blocks for ever (a hung mount met before the backup starts).
``pause_after=SIZE`` with ``gate=PATH``: after SIZE volume bytes, create ``PATH.paused``
                     and wait until ``PATH`` exists. Lets a test make a *real* fault (fill
                     a tmpfs, shut a filesystem down) at a known point of the backup.
``pause_commit=1``   with ``gate=PATH``: the first volume commit waits the same way.
``pause_catalog=1``  with ``gate=PATH``: writing the catalog copy (``catalog/``) waits the
                     same way, once (a backup whose set is already complete).
``pause_delete=1``   with ``gate=PATH``: the first deletion of a volume waits the same way
                     (prune: after the catalog switched to a compacted copy).
``pause_read=SIZE``  with ``gate=PATH``: once SIZE volume bytes were read (``read``,
                     ``open_read``), the next read waits the same way (a restore, verify,
                     rebuild or repair stopped at a known point of its reading); with 0,
                     the first volume read waits before it reaches the inner device.
``count=PATH``       every volume read (``read``, ``open_read``) appends the number of
                     bytes it gave to ``PATH``, one line each, from every process that
                     reads the device: how many bytes crossed from the device in all.

Counters live in the wrapper, so each process (each backup run) starts afresh.
"""

from __future__ import annotations

import os
import threading
import time
from typing import BinaryIO, ClassVar
from urllib.parse import parse_qsl, urlencode

from parbackup.devices.base import Device, ObjectWriter
from parbackup.devices.registry import open_device
from parbackup.devices.url import DeviceURL, parse_size
from parbackup.devices.wrappers import ForwardingDevice, ForwardingWriter
from parbackup.errors import DeviceError, DeviceFullError, TransientDeviceError, UsageError
from parbackup.fileio import write_all

PREFIX = "faulty+"
FAULT_KEYS = {
    "fail_after",
    "error",
    "hang_after",
    "flaky",
    "fail_open",
    "hang_open",
    "hang_catalog",
    "pause_after",
    "pause_commit",
    "pause_delete",
    "pause_catalog",
    "pause_read",
    "gate",
    "count",
}
_ERRORS = {
    "eio": (DeviceError, "Input/output error"),
    "enospc": (DeviceFullError, "No space left on device"),
    "erofs": (DeviceError, "Read-only file system"),
    "conn": (TransientDeviceError, "connection lost"),
}
_NEVER = threading.Event()  # never set: what a hung call waits on


def inner_url(raw: str) -> str:
    """The wrapped device's URL: scheme without ``faulty+``, fault options removed."""
    # By string, not urlunsplit: that drops the "//" of a scheme it does not know
    # ("tape:///t" would come back as "tape:/t", a relative directory path).
    base, _, query = raw[len(PREFIX) :].partition("?")
    pairs = parse_qsl(query.partition("#")[0], keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in pairs if k not in FAULT_KEYS])
    return base + (f"?{kept}" if kept else "")


class _FaultyWriter(ForwardingWriter):
    def __init__(
        self, device: FaultyDevice, inner: ObjectWriter, counted: bool, catalog: bool = False
    ) -> None:
        super().__init__(inner)
        self.device, self.counted, self.catalog = device, counted, catalog

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.catalog and self.device.hang_catalog:
            self.device.hung = True
        if self.catalog and self.device.pause_catalog:
            self.device.pause()
        self.device.check()
        if not self.counted:
            self.inner.write(data)
            return
        allowed = self.device.admit(len(data))
        if allowed:
            self.inner.write(memoryview(data)[:allowed])
        if allowed < len(data):
            self.device.trip()

    def checkpoint(self) -> bool:
        self.device.check()
        return self.inner.checkpoint()

    def commit(self) -> None:
        self.device.check()
        if self.counted and self.device.pause_commit:
            self.device.pause()
        self.inner.commit()

    def abort(self) -> None:
        if self.device.hung:
            _NEVER.wait()
        self.inner.abort()


class _CountedStream:
    """A volume stream whose reads count towards ``pause_read``; the rest is forwarded."""

    def __init__(self, device: FaultyDevice, inner: BinaryIO) -> None:
        self.device, self.inner = device, inner

    def read(self, n: int = -1) -> bytes:
        self.device.note_read(0)
        data = self.inner.read(n)
        self.device.note_read(len(data))
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        self.device.note_read(0)
        n = self.inner.readinto(buf)  # type: ignore[attr-defined]
        self.device.note_read(n or 0)
        return n

    def __enter__(self) -> _CountedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class FaultyDevice(ForwardingDevice):
    """Wraps the device named by the rest of the URL and injects the configured faults.

    Everything is forwarded (devices.wrappers) but opening, closing, writers and volume
    reads; small objects go through this wrapper's own ``replace`` so that writing the
    catalog copy can hang.
    """

    options: ClassVar[frozenset[str]] = frozenset(FAULT_KEYS)

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(open_device(inner_url(url.raw)))
        self.url = url
        p = url.params
        self.fail_after = _size(p.get("fail_after"))
        self.hang_after = _size(p.get("hang_after"))
        self.pause_after = _size(p.get("pause_after"))
        self.gate = p.get("gate", "")
        self.pause_commit = p.get("pause_commit", "") not in ("", "0")
        self.pause_delete = p.get("pause_delete", "") not in ("", "0")
        self.pause_catalog = p.get("pause_catalog", "") not in ("", "0")
        self.pause_read = _size(p.get("pause_read"))
        self.count = p.get("count", "")
        pausing = self.pause_after is not None or self.pause_commit or self.pause_delete
        pausing = pausing or self.pause_catalog or self.pause_read is not None
        if pausing and not self.gate:
            raise UsageError(
                "faulty device: pause_after/_commit/_delete/_read/_catalog need gate=PATH"
            )
        self.flaky = int(p.get("flaky", "0"))
        self.fail_open = p.get("fail_open", "") not in ("", "0")
        self.hang_open = p.get("hang_open", "") not in ("", "0")
        self.hang_catalog = p.get("hang_catalog", "") not in ("", "0")
        kind = p.get("error", "eio")
        if kind not in _ERRORS:
            raise UsageError(f"faulty device: error must be one of {', '.join(_ERRORS)}")
        self.error_class, self.error_text = _ERRORS[kind]
        self.lock = threading.Lock()
        self.written = 0
        self.bytes_read = 0
        self.writes = 0
        self.failed = False
        self.hung = False
        self.paused = False

    # -- fault machinery -----------------------------------------------------------------
    def admit(self, n: int) -> int:
        """How many of ``n`` bytes may be written now; hangs, pauses or flakes as told."""
        with self.lock:
            self.writes += 1
            if self.flaky and self.writes % self.flaky == 0:
                raise TransientDeviceError(f"{self.url.display}: flaky write (injected)")
            start = self.written
        self.check()
        if self.pause_after is not None and start + n > self.pause_after:
            self.pause()
        if self.hang_after is not None and start + n > self.hang_after:
            self.hung = True
            _NEVER.wait()
        allowed = n
        if self.fail_after is not None:
            allowed = max(0, min(n, self.fail_after - start))
        with self.lock:
            self.written += allowed
        return allowed

    def pause(self) -> None:
        """The first time only: say so in ``gate.paused``, then wait until ``gate`` exists."""
        with self.lock:
            if self.paused:
                return
            self.paused = True
        with open(self.gate + ".paused", "w"):
            pass
        while not os.path.exists(self.gate):
            time.sleep(0.01)

    def note_read(self, n: int) -> None:
        """Count ``n`` volume bytes read; pause once ``pause_read`` were (called with 0
        before each read reaches the inner device)."""
        with self.lock:
            self.bytes_read += n
            total = self.bytes_read
        if self.count and n:
            fd = os.open(self.count, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, f"{n}\n".encode())
            finally:
                os.close(fd)
        if self.pause_read is not None and total >= self.pause_read:
            self.pause()

    def trip(self) -> None:
        """Break the device for good and raise its error."""
        self.failed = True
        self.check()

    def check(self) -> None:
        """Raise the configured error if the device has broken (or hang if it hung)."""
        if self.hung:
            _NEVER.wait()
        if self.failed:
            raise self.error_class(f"{self.url.display}: {self.error_text} (injected)")

    # -- the device interface --------------------------------------------------------------
    def open(self, write: bool = True) -> None:
        if self.hang_open:
            self.hung = True
            _NEVER.wait()
        if self.fail_open:
            raise DeviceError(f"{self.url.display}: host unreachable (injected)")
        self.inner.open(write)

    def close(self) -> None:
        if self.hung:
            _NEVER.wait()
        self.inner.close()

    def create(self, name: str) -> ObjectWriter:
        counted = name.startswith("sets/")
        if counted:
            self.check()
        return _FaultyWriter(self, self.inner.create(name), counted)

    def replace(self, name: str) -> ObjectWriter:
        counted, catalog = name.startswith("sets/"), name.startswith("catalog/")
        return _FaultyWriter(self, self.inner.replace(name), counted, catalog)

    def put(self, name: str, data: bytes) -> None:
        Device.put(self, name, data)  # through this wrapper's replace

    def put_stream(self, name: str, stream: BinaryIO, chunk: int = 1 << 20) -> None:
        Device.put_stream(self, name, stream, chunk)

    def delete(self, name: str) -> None:
        if name.startswith("sets/") and self.pause_delete:
            self.pause()
        self.inner.delete(name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        if not name.startswith("sets/"):
            return self.inner.read(name, offset, length)
        self.check()
        self.note_read(0)
        data = self.inner.read(name, offset, length)
        self.note_read(len(data))
        return data

    def open_read(self, name: str, chunk: int = 8 << 20) -> BinaryIO:
        if not name.startswith("sets/"):
            return self.inner.open_read(name, chunk)
        self.check()
        self.note_read(0)
        return _CountedStream(self, self.inner.open_read(name, chunk))  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<faulty {self.inner!r}>"


def _size(text: str | None) -> int | None:
    return None if text is None else parse_size(text)
