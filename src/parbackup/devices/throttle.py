"""A wrapper that limits a device's throughput: ``?limit=RATE`` on any device URL.

Useful to keep a backup from saturating a shared link or disk, and to make a fast local
device behave like a slow one (the uneven-devices benchmark uses it when no real slow
link is at hand). One token bucket per device covers every byte written to or read from
it; a writer that runs ahead of the rate sleeps. The burst is at most a quarter second of
traffic, so the average rate holds over any window longer than that.
"""

from __future__ import annotations

import threading
import time

from parbackup.devices.base import Device, ObjectInfo, ObjectWriter
from parbackup.devices.url import parse_size
from parbackup.errors import UsageError
from parbackup.model import Space


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


class _ThrottledWriter(ObjectWriter):
    def __init__(self, inner: ObjectWriter, bucket: TokenBucket) -> None:
        self.inner, self.bucket = inner, bucket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.bucket.take(len(data))
        self.inner.write(data)

    def commit(self) -> None:
        self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()

    def checkpoint(self) -> bool:
        return self.inner.checkpoint()


class ThrottledDevice(Device):
    """Any device, with its reads and writes held to ``?limit=RATE`` bytes per second."""

    def __init__(self, inner: Device) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self.capacity = None  # the inner device applies ?capacity= itself
        rate = parse_size(inner.url.params["limit"].removesuffix("/s"))
        self.bucket = TokenBucket(rate)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def raw_space(self) -> Space:
        return self.inner.space()

    def create(self, name: str) -> ObjectWriter:
        return _ThrottledWriter(self.inner.create(name), self.bucket)

    def replace(self, name: str) -> ObjectWriter:
        return _ThrottledWriter(self.inner.replace(name), self.bucket)

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.read(name, offset, length)
        self.bucket.take(len(data))
        return data

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)
