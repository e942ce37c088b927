"""``shared://SPEC``: a surviving device of a parity set, read once for two readers (K1).

A restore or verify with a data device missing reads each surviving data device twice:
its own reader takes its records, and the stand-in for the missing device
(devices/decoded.py) takes the same volumes' units to decode the missing column. A disk
may serve the second read from the page cache, but an SFTP host or an object store sends
the bytes twice, and a disk whose cache was dropped reads them twice. Here both read the
device through this wrapper, one instance in each process, sharing a spool directory:
the first to want a block of a volume (1 MiB, aligned in the volume) reads it from the
device and leaves it in the spool; the other finds it there. A block leaves the spool
(its pages punched out of the spool file) once both readers have read past its end, as
both read forward; a reader that comes back to bytes it passed (a verify's frame check
reads volume headers and end records after the records) reads just those from the
device again. So each
surviving byte crosses from the device once, and the spool holds what one reader has
read and the other not yet: about the distance between them, at most the volumes read
by only one of them (a partial restore), on local scratch disk, never in memory.
That distance is bounded: a device's own reader reads one device while the stand-in
reads every survivor and decodes, so it runs ahead by up to whole volumes. Past
``SPOOL_BYTES`` held in a spool, or when the scratch file system refuses a write (a
small tmpfs ``$TMPDIR``), a read goes to the device without the spool (both readers read
those bytes, as without sharing): scratch room never decides whether a restore works.

Which blocks are in the spool is one state byte per block in a file beside it, read and
written under a POSIX record lock over the blocks a read covers, so two processes never
fetch one block twice; the lock is held while the device is read, as the other process
would wait for those bytes anyway.

``SPEC`` is the path of a JSON file written by readback/recover.py: the device's URL,
the spool directory, and this reader's role (0: the device's own reader, 1: the
stand-in). Read-only; anything not a volume read (label, listing) goes to the device.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import threading
from typing import Any

from parbackup.devices.base import Device, ObjectInfo, ReadOnlyDevice
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.url import parse_url
from parbackup.errors import DeviceError, DeviceMissingError, ParbackupError
from parbackup.model import Capabilities, Label

BLOCK = 1 << 20
SPOOL_BYTES = 64 << 20
"""At most this much of a device's bytes waits in its spool (module docstring)."""
_HELD = 1
"""State bit: the block's bytes are in the spool."""
_PASSED = (2, 4)
"""State bit per role: that reader has read past the block's end."""
_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _punch(fd: int, offset: int, length: int) -> None:
    """Free a range of the spool file (it reads as zeros after); best effort."""
    _libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(_PUNCH), ctypes.c_long(offset), ctypes.c_long(length)
    )


class _Volume:
    """One volume's spool: its bytes file and its state file (one byte per block)."""

    def __init__(self, spool: str, name: str, size: int) -> None:
        base = os.path.join(spool, name.replace("/", "%"))
        self.size = size
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self.data = os.open(base + ".data", flags, 0o600)
        self.state = os.open(base + ".state", flags, 0o600)

    def close(self) -> None:
        os.close(self.data)
        os.close(self.state)


class SharedDevice(ReadOnlyDevice):
    """A device read through a spool shared with one other reader (read-only)."""

    scheme = "shared"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=4)

    def __init__(self, url: Any) -> None:
        super().__init__(url)
        self.spec = url.path
        # a reader names the device itself (damage, verify's suspects by URL, byte
        # counts), never this spec in a scratch directory gone after the command
        bad = (OSError, ValueError, KeyError, TypeError, ParbackupError)
        with contextlib.suppress(*bad), open(self.spec, "rb") as fh:
            self.url = parse_url(str(json.load(fh)["url"]))
        self.inner: Device | None = None
        self.spool, self.role = "", 0
        self.volumes: dict[str, _Volume] = {}
        self.mutex = threading.Lock()
        """POSIX record locks are per process: threads of one process take this first."""

    def open(self, write: bool = True) -> None:
        if write:
            raise self.read_only()
        try:
            with open(self.spec, "rb") as fh:
                spec = json.load(fh)
            self.spool, self.role = str(spec["spool"]), int(spec["role"]) % 2
            inner = RetryingDevice(open_device(str(spec["url"])))
        except FileNotFoundError:
            raise DeviceMissingError(
                f"{self.url.display}: this device is shared only on the host that runs"
                " the restore (restore without --cluster when a device is missing)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"{self.url.display}: unusable shared-device spec") from exc
        inner.open(write=False)
        self.inner = inner
        self.capabilities = inner.capabilities  # type: ignore[misc]

    def close(self) -> None:
        for vol in self.volumes.values():
            vol.close()
        self.volumes = {}
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def _dev(self) -> Device:
        if self.inner is None:
            raise DeviceError(f"{self.url.display}: not open")
        return self.inner

    def read_label(self) -> Label | None:
        return self._dev().read_label()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self._dev().list(prefix)

    def size(self, name: str) -> int:
        return self._dev().size(name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        return bytes(self.read_view(name, offset, length, bytearray()))

    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        """Into the caller's reusable ``buf`` where it is large enough (a fresh 16 MiB
        ``bytes`` per span would raise the reader's peak RSS)."""
        if not name.startswith("sets/") or length <= 0:
            return self._dev().read_view(name, offset, length, buf)
        with self.mutex:
            vol = self.volumes.get(name)
            if vol is None:
                try:
                    vol = _Volume(self.spool, name, self._dev().size(name))
                except OSError as exc:
                    raise DeviceError(f"{self.url.display}: spool {self.spool}: {exc}") from exc
                self.volumes[name] = vol
            end = min(offset + length, vol.size)
            if offset >= end:
                return memoryview(b"")
            lo, hi = offset // BLOCK, (end + BLOCK - 1) // BLOCK
            try:
                fcntl.lockf(vol.state, fcntl.LOCK_EX, hi - lo, lo, os.SEEK_SET)
                try:
                    return self._read_locked(name, vol, offset, end, lo, hi, buf)
                finally:
                    fcntl.lockf(vol.state, fcntl.LOCK_UN, hi - lo, lo, os.SEEK_SET)
            except OSError as exc:  # the spool's disk (full, gone): one clear line
                raise DeviceError(f"{self.url.display}: spool {self.spool}: {exc}") from exc

    def _read_locked(
        self, name: str, vol: _Volume, offset: int, end: int, lo: int, hi: int, buf: bytearray
    ) -> memoryview:
        """``read`` with blocks ``lo``..``hi`` locked: fetch the blocks nobody has yet,
        answer from the spool, mark the blocks this reader has passed, free the blocks
        both have passed."""
        states = bytearray(os.pread(vol.state, hi - lo, lo).ljust(hi - lo, b"\0"))
        mine, other = _PASSED[self.role], _PASSED[1 - self.role]
        if any(s & mine and not s & _HELD for s in states):
            # back to bytes this reader has passed (a verify's frame check after its
            # records): the other reader will not want them now; just these bytes
            return self._dev().read_view(name, offset, end - offset, buf)
        fetch = sum(1 for s in states if not s & _HELD)
        if any(s & other and not s & _HELD for s in states) or (
            fetch and not self._room(fetch * BLOCK)
        ):
            # the other reader passed these bytes unspooled, or the spool is full
            return self._unspooled(name, vol, states, offset, end, lo, hi, buf)
        i = 0
        while i < hi - lo:
            if states[i] & _HELD:
                i += 1
                continue
            j = i
            while j < hi - lo and not states[j] & _HELD:
                j += 1
            start, stop = (lo + i) * BLOCK, min((lo + j) * BLOCK, vol.size)
            data = self._dev().read(name, start, stop - start)
            if len(data) != stop - start:
                raise DeviceError(
                    f"{self.url.display}: {name}: {len(data)} bytes at {start}, not {stop - start}"
                )
            try:
                written = os.pwrite(vol.data, data, start)
            except OSError:
                written = -1
            if written != len(data):  # the scratch file system is full: not these
                _punch(vol.data, start, stop - start)
                return self._unspooled(name, vol, states, offset, end, lo, hi, buf)
            for b in range(i, j):
                states[b] |= _HELD
            i = j
        if len(buf) >= end - offset:
            out = memoryview(buf)[: end - offset]
            if os.preadv(vol.data, [out], offset) != len(out):
                raise DeviceError(f"{self.url.display}: {name}: the spool is short")
        else:
            out = memoryview(os.pread(vol.data, end - offset, offset))
        self._passed(vol, states, end, lo, hi)
        return out

    def _unspooled(
        self,
        name: str,
        vol: _Volume,
        states: bytearray,
        offset: int,
        end: int,
        lo: int,
        hi: int,
        buf: bytearray,
    ) -> memoryview:
        """``read`` straight from the device, the spool's state kept (blocks passed)."""
        out = self._dev().read_view(name, offset, end - offset, buf)
        self._passed(vol, states, end, lo, hi)
        return out

    def _room(self, more: int) -> bool:
        """Whether ``more`` bytes fit in the spool under ``SPOOL_BYTES`` (what its
        volumes' files hold now, holes punched out)."""
        held = 0
        try:
            with os.scandir(self.spool) as found:
                for entry in found:
                    if entry.name.endswith(".data"):
                        held += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            return False
        return held + more <= SPOOL_BYTES

    def _passed(self, vol: _Volume, states: bytearray, end: int, lo: int, hi: int) -> None:
        """Mark the blocks this reader has read past, free those both have, save."""
        mine, both = _PASSED[self.role], _PASSED[0] | _PASSED[1]
        freed = []
        for b in range(hi - lo):
            if min((lo + b + 1) * BLOCK, vol.size) <= end:
                states[b] |= mine
            if states[b] & both == both and states[b] & _HELD:
                states[b] &= ~_HELD
                freed.append(lo + b)
        try:
            os.pwrite(vol.state, bytes(states), lo)
        except OSError:  # a full scratch file system: the blocks stay held, unfreed
            return
        for b in freed:  # only once no state says their bytes are still there
            _punch(vol.data, b * BLOCK, BLOCK)
