"""A device wrapper that retries transient errors with backoff (restic's backend/retry).

Every call that raises ``TransientDeviceError`` is tried again, after 0.1 s, 0.2 s, 0.4 s,
... up to ``attempts`` tries in all; then the error becomes permanent (a plain
``DeviceError`` saying how often it was tried), so the engine fails the device over
(REQUIREMENTS R1). Permanent errors pass through at once. Retrying is only sound because
the device contract says a transient error means "retrying the same call may succeed".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from parbackup.devices.base import Device, ObjectInfo, ObjectWriter
from parbackup.errors import DeviceError, TransientDeviceError
from parbackup.model import Label, Space

T = TypeVar("T")


class RetryPolicy:
    """How often and how patiently to retry; ``sleep`` is injectable for tests."""

    def __init__(
        self,
        attempts: int = 5,
        first_delay: float = 0.1,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.attempts, self.first_delay, self.max_delay = attempts, first_delay, max_delay
        self.sleep = sleep

    def call(self, what: Callable[[], T]) -> T:
        """Run ``what``; retry it on TransientDeviceError; give up after ``attempts``."""
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return what()
            except TransientDeviceError as exc:
                if attempt == self.attempts:
                    raise DeviceError(f"{exc} (gave up after {attempt} attempts)") from exc
                self.sleep(delay)
                delay = min(delay * 2, self.max_delay)
        raise AssertionError("unreachable")  # pragma: no cover


class _RetryingWriter(ObjectWriter):
    def __init__(self, inner: ObjectWriter, policy: RetryPolicy) -> None:
        self.inner, self.policy = inner, policy

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.policy.call(lambda: self.inner.write(data))

    def commit(self) -> None:
        self.policy.call(self.inner.commit)

    def abort(self) -> None:
        self.inner.abort()

    def checkpoint(self) -> bool:
        return self.policy.call(self.inner.checkpoint)


class RetryingDevice(Device):
    """Wraps any device; same URL, scheme and capabilities; transient errors retried.

    Every operation of the interface, and the defaults a kind may override (labels,
    space, small objects, streaming reads), is delegated so the kind's own versions run.
    """

    def __init__(self, inner: Device, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.scheme = inner.scheme  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]

    def open(self) -> None:
        self.policy.call(self.inner.open)

    def close(self) -> None:
        self.inner.close()

    def raw_space(self) -> Space:
        return self.policy.call(self.inner.raw_space)

    def space(self) -> Space:
        return self.policy.call(self.inner.space)

    def create(self, name: str) -> ObjectWriter:
        return _RetryingWriter(self.policy.call(lambda: self.inner.create(name)), self.policy)

    def replace(self, name: str) -> ObjectWriter:
        return _RetryingWriter(self.policy.call(lambda: self.inner.replace(name)), self.policy)

    def read(self, name: str, offset: int, length: int) -> bytes:
        return self.policy.call(lambda: self.inner.read(name, offset, length))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.policy.call(lambda: self.inner.list(prefix))

    def delete(self, name: str) -> None:
        self.policy.call(lambda: self.inner.delete(name))

    def size(self, name: str) -> int:
        return self.policy.call(lambda: self.inner.size(name))

    def open_read(self, name: str, chunk: int = 8 << 20) -> BinaryIO:
        return self.policy.call(lambda: self.inner.open_read(name, chunk))

    def get(self, name: str) -> bytes:
        return self.policy.call(lambda: self.inner.get(name))

    def put(self, name: str, data: bytes) -> None:
        self.policy.call(lambda: self.inner.put(name, data))

    def put_stream(self, name: str, stream: BinaryIO, chunk: int = 1 << 20) -> None:
        self.inner.put_stream(name, stream, chunk)  # a stream cannot be replayed

    def read_label(self) -> Label | None:
        return self.policy.call(self.inner.read_label)

    def ensure_label(self) -> Label:
        return self.policy.call(self.inner.ensure_label)

    def __getattr__(self, name: str) -> Any:
        """Anything else a kind offers (tape positioning, ...) goes to it unchanged."""
        return getattr(self.__dict__["inner"], name)

    def __repr__(self) -> str:
        return f"<retrying {self.inner!r}>"
