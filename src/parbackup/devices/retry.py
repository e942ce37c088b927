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
from typing import TypeVar

from parbackup.devices.base import Device, ObjectWriter
from parbackup.devices.wrappers import ForwardingDevice, ForwardingWriter
from parbackup.errors import DeviceError, TransientDeviceError

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


class _RetryingWriter(ForwardingWriter):
    def __init__(self, inner: ObjectWriter, policy: RetryPolicy) -> None:
        super().__init__(inner)
        self.policy = policy

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.policy.call(lambda: self.inner.write(data))

    def commit(self) -> None:
        self.policy.call(self.inner.commit)

    def checkpoint(self) -> bool:
        return self.policy.call(self.inner.checkpoint)


class RetryingDevice(ForwardingDevice):
    """Wraps any device; same URL, scheme and capabilities; transient errors retried.

    Every forwarded call (devices.wrappers) runs under the policy, so the kind's own
    versions of every operation run, retried; ``close``, ``abort`` and ``put_stream``
    (a stream cannot be replayed) are tried once.
    """

    def __init__(self, inner: Device, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()

    def call(self, fn: Callable[[], T]) -> T:
        return self.policy.call(fn)

    def wrap_writer(self, writer: ObjectWriter) -> ObjectWriter:
        return _RetryingWriter(writer, self.policy)

    def __repr__(self) -> str:
        return f"<retrying {self.inner!r}>"
