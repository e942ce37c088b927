"""The byte stream of a tape: frames in fixed-size blocks (see docs/FORMAT.md, "Tape stream").

``BlockWriter`` packs frames into whole blocks and writes them to a file descriptor,
counting against a capacity; ``BlockReader`` reads frames back front to back, checking
every CRC, and can rewind only a plain file. Both raise DeviceError only.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib

from parbackup.errors import DeviceError, DeviceFullError, device_error_from_os
from parbackup.fileio import write_all

FRAME = struct.Struct("<cII")
SIZE = struct.Struct("<Q")
MAX_FRAME = 64 << 20
DATA_FRAME = 4 << 20
TAPE_HEADER = json.dumps({"format": "parbackup-tape", "version": 1}).encode()
DEFAULT_BLOCK = 256 * 1024


class BlockWriter:
    """Frames into fixed-size blocks onto a file descriptor, counting against a capacity."""

    def __init__(self, fd: int, block: int, capacity: int | None, where: str) -> None:
        self.fd, self.block, self.capacity, self.where = fd, block, capacity, where
        self.buf = bytearray()
        self.flushed = 0
        self.broken = False

    @property
    def used(self) -> int:
        """Bytes on the medium once everything buffered is written."""
        return self.flushed + len(self.buf)

    def reserve(self) -> int:
        """Room kept back for the closing frames and the last padded block."""
        return 2 * self.block + 64

    def frame(self, kind: bytes, body: bytes | bytearray | memoryview = b"") -> None:
        if self.broken:
            raise DeviceError(f"{self.where}: the tape stream broke earlier")
        crc = 0 if kind == b"P" else zlib.crc32(body)
        need = FRAME.size + len(body)
        closing = kind in (b"C", b"A", b"E", b"P")
        if (
            self.capacity is not None
            and not closing
            and self.used + need + self.reserve() > self.capacity
        ):
            raise DeviceFullError(f"{self.where}: tape capacity reached")
        self.buf += FRAME.pack(kind, len(body), crc)
        self.buf += body
        self._write_blocks()

    def _write_blocks(self) -> None:
        whole = len(self.buf) - len(self.buf) % self.block
        if whole:
            self._out(memoryview(self.buf)[:whole])
            del self.buf[:whole]

    def _out(self, view: memoryview) -> None:
        """Write whole blocks, one call each: a short write is continued, and one that
        takes nothing (a drive at its end) raises ENOSPC rather than looping for ever."""
        try:
            for at in range(0, len(view), self.block):
                block = view[at : at + self.block]
                write_all(self.fd, block)
                self.flushed += len(block)
        except OSError as exc:
            self.broken = True
            error = device_error_from_os(exc, f"{self.where}: write")
            if error.transient:  # part of a block may be out: the stream cannot go on
                error = DeviceError(str(error))
            raise error from exc

    def flush(self) -> None:
        """Pad to a whole block, write it out and make it durable where the medium can."""
        if self.buf:
            room = self.block - len(self.buf) % self.block
            if room < FRAME.size:
                room += self.block
            self.frame(b"P", bytes(room - FRAME.size))
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # pipes and drives
                self.broken = True
                raise device_error_from_os(exc, f"{self.where}: sync") from exc


class BlockReader:
    """Reads frames from a file descriptor front to back (rewinding only plain files)."""

    def __init__(self, fd: int, block: int, seekable: bool, where: str) -> None:
        self.fd, self.block, self.seekable, self.where = fd, block, seekable, where
        self.buf = bytearray()
        self.eof = False

    def _fill(self, n: int) -> None:
        while len(self.buf) < n and not self.eof:
            try:
                data = os.read(self.fd, max(self.block, n - len(self.buf)))
            except OSError as exc:
                raise device_error_from_os(exc, f"{self.where}: read") from exc
            if not data:
                self.eof = True
            self.buf += data

    def exact(self, n: int) -> bytes:
        self._fill(n)
        if len(self.buf) < n:
            raise DeviceError(f"{self.where}: the tape ends in the middle of a frame")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def at_end(self) -> bool:
        self._fill(1)
        return not self.buf

    def frame(self) -> tuple[bytes, bytes]:
        """The next (kind, body) that is not padding; DeviceError on damage."""
        while True:
            if self.at_end():
                raise DeviceError(f"{self.where}: the tape ends without its end mark")
            kind, length, crc = FRAME.unpack(self.exact(FRAME.size))
            if kind not in b"TOCDAPE" or length > MAX_FRAME:
                raise DeviceError(f"{self.where}: not a parbackup tape frame")
            body = self.exact(length)
            if kind == b"P":
                continue
            if zlib.crc32(body) != crc:
                raise DeviceError(f"{self.where}: tape frame checksum mismatch")
            return kind, body

    def rewind(self) -> None:
        try:
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.where}: rewind") from exc
        self.buf.clear()
        self.eof = False
