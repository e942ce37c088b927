"""A wrapper that limits a device's throughput: ``?limit=RATE`` on any device URL.

Useful to keep a backup from saturating a shared link or disk, and to make a fast local
device behave like a slow one (the uneven-devices benchmark uses it when no real slow
link is at hand). One token bucket per device covers every byte written to or read from
it; a writer that runs ahead of the rate sleeps. The burst is at most a quarter second of
traffic, so the average rate holds over any window longer than that.
"""

from __future__ import annotations

import io
import threading
import time
from typing import BinaryIO, ClassVar

from parbackup.devices.base import Device, ObjectWriter
from parbackup.devices.url import parse_size
from parbackup.devices.wrappers import ForwardingDevice, ForwardingWriter
from parbackup.errors import UsageError


class TokenBucket:
    """``rate`` bytes per second with a burst of ``burst`` bytes; thread-safe."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic) -> None:
        if rate <= 0:
            raise UsageError("limit must be a positive rate")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 64 * 1024))
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()
        self.lock = threading.Lock()

    def delay(self, nbytes: int) -> float:
        """Take ``nbytes`` tokens (going into debt); seconds to wait before proceeding."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= nbytes
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take(self, nbytes: int) -> None:
        """Take ``nbytes`` tokens, sleeping as long as the rate requires."""
        wait = self.delay(nbytes)
        if wait > 0:
            time.sleep(wait)


class _ThrottledWriter(ForwardingWriter):
    def __init__(self, inner: ObjectWriter, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self.bucket = bucket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.bucket.take(len(data))
        self.inner.write(data)


class _ThrottledStream(io.RawIOBase):
    """A reader from the inner device's ``open_read``, paced by the bucket."""

    def __init__(self, inner: BinaryIO, bucket: TokenBucket) -> None:
        self.inner, self.bucket = inner, bucket

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.inner.read(-1 if size is None else size)
        self.bucket.take(len(data))
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class ThrottledDevice(ForwardingDevice):
    """Any device, with its reads and writes held to ``?limit=RATE`` bytes per second.

    Everything is forwarded (devices.wrappers); only the bytes moved are paced: writers,
    ``read``, ``get``, ``put``, ``put_stream`` and ``open_read``.
    """

    options: ClassVar[frozenset[str]] = frozenset({"limit"})

    def __init__(self, inner: Device) -> None:
        super().__init__(inner)
        rate = parse_size(inner.url.params["limit"].removesuffix("/s"))
        self.bucket = TokenBucket(rate)

    def wrap_writer(self, writer: ObjectWriter) -> ObjectWriter:
        return _ThrottledWriter(writer, self.bucket)

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.read(name, offset, length)
        self.bucket.take(len(data))
        return data

    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        """Into the caller's reusable buffer, as the device reads (a fresh ``bytes`` a
        span through ``read`` cost a restore's readers 90 MB more at their peak)."""
        view = self.inner.read_view(name, offset, length, buf)
        self.bucket.take(len(view))
        return view

    def get(self, name: str) -> bytes:
        data = self.inner.get(name)
        self.bucket.take(len(data))
        return data

    def put(self, name: str, data: bytes) -> None:
        self.bucket.take(len(data))
        self.inner.put(name, data)

    def put_stream(self, name: str, stream: BinaryIO, chunk: int = 1 << 20) -> None:
        self.inner.put_stream(name, _ThrottledStream(stream, self.bucket), chunk)  # type: ignore[arg-type]

    def open_read(self, name: str, chunk: int = 8 << 20) -> BinaryIO:
        return _ThrottledStream(self.inner.open_read(name, chunk), self.bucket)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<throttled {self.inner!r}>"
