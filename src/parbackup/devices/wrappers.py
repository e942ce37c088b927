"""One forwarding base for device wrappers (restic ``backend/retry``, kopia ``retrying``).

A wrapper (retry, throttle, test faults) changes one or two things about a device and must
pass everything else through unchanged: the seven operations, every default a kind may
override (``space``, ``capped``, ``replace``, ``unfinished``, ``discard``, ``put``,
``put_stream``, ``get``, ``size``, ``open_read``, ``read_view``, ``read_label``, ``ensure_label``,
``write_label``) and any attribute a
kind adds. Forwarding the defaults matters: a tape starts a new medium in its own
``ensure_label`` and reads front to back in its own ``open_read``; the base class's
versions, built on ``list`` and ``read``, would do the wrong thing there (a second backup
onto ``tape://...?limit=`` once failed for exactly that reason).

``ForwardingDevice`` forwards every call through two hooks, so a wrapper overrides only
what it changes:

``call(fn)``          how a forwarded call runs (the retry wrapper retries it).
``wrap_writer(w)``    what a writer from ``create``/``replace`` becomes (writer wrappers
                      subclass ``ForwardingWriter``, kept in devices.base beside
                      ``CappedWriter``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from parbackup.devices.base import Device, ForwardingWriter, ObjectInfo, ObjectWriter
from parbackup.model import Label, Space

T = TypeVar("T")

__all__ = ["ForwardingDevice", "ForwardingWriter"]


class ForwardingDevice(Device):
    """A device that passes the whole interface to ``inner``; same URL, scheme, capabilities.

    The inner device applies ``?capacity=`` itself, so ``space`` and ``capped`` are
    forwarded too. Attributes the wrapper does not have (a kind's own, e.g. a tape's
    ``mode``) are looked up on ``inner``.
    """

    def __init__(self, inner: Device) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.capabilities = inner.capabilities  # type: ignore[misc]

    @property
    def overwrote(self) -> str:  # type: ignore[override]
        return self.inner.overwrote

    # -- hooks -----------------------------------------------------------------------------
    def call(self, fn: Callable[[], T]) -> T:
        """Run one forwarded call; the retry wrapper retries it."""
        return fn()

    def wrap_writer(self, writer: ObjectWriter) -> ObjectWriter:
        """What a writer of the inner device becomes; the throttle wrapper paces it."""
        return writer

    # -- the seven -------------------------------------------------------------------------
    def open(self, write: bool = True) -> None:
        self.call(lambda: self.inner.open(write))

    def close(self) -> None:
        self.inner.close()

    def raw_space(self) -> Space:
        return self.call(self.inner.raw_space)

    def create(self, name: str) -> ObjectWriter:
        return self.wrap_writer(self.call(lambda: self.inner.create(name)))

    def read(self, name: str, offset: int, length: int) -> bytes:
        return self.call(lambda: self.inner.read(name, offset, length))

    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        if type(self).read is not ForwardingDevice.read:  # a wrapper that changes reads
            return super().read_view(name, offset, length, buf)  # sees every read
        return self.call(lambda: self.inner.read_view(name, offset, length, buf))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.call(lambda: self.inner.list(prefix))

    def delete(self, name: str) -> None:
        self.call(lambda: self.inner.delete(name))

    # -- the defaults a kind may override ---------------------------------------------------
    def space(self) -> Space:
        return self.call(self.inner.space)

    def capped(self, writer: ObjectWriter) -> ObjectWriter:
        return self.inner.capped(writer)

    def replace(self, name: str) -> ObjectWriter:
        return self.wrap_writer(self.call(lambda: self.inner.replace(name)))

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        return self.call(lambda: self.inner.unfinished(prefix))

    def discard(self, name: str) -> None:
        self.call(lambda: self.inner.discard(name))

    def put(self, name: str, data: bytes) -> None:
        self.call(lambda: self.inner.put(name, data))

    def put_stream(self, name: str, stream: BinaryIO, chunk: int = 1 << 20) -> None:
        self.inner.put_stream(name, stream, chunk)  # a stream cannot be replayed: no call()

    def get(self, name: str) -> bytes:
        return self.call(lambda: self.inner.get(name))

    def size(self, name: str) -> int:
        return self.call(lambda: self.inner.size(name))

    def open_read(self, name: str, chunk: int = 8 << 20) -> BinaryIO:
        return self.call(lambda: self.inner.open_read(name, chunk))

    def read_label(self) -> Label | None:
        return self.call(self.inner.read_label)

    def has_label(self) -> bool:
        return self.call(self.inner.has_label)

    def ensure_label(self) -> Label:
        return self.call(self.inner.ensure_label)

    def check_new_label(self) -> None:
        self.call(self.inner.check_new_label)

    def write_label(self, label: Label) -> None:
        self.call(lambda: self.inner.write_label(label))

    def write_new_label(self, label: Label) -> Label:
        return self.call(lambda: self.inner.write_new_label(label))

    def put_label_if_absent(self, label: Label) -> None:
        self.call(lambda: self.inner.put_label_if_absent(label))

    def __getattr__(self, name: str) -> Any:
        """Anything else a kind offers goes to it unchanged."""
        try:
            inner = self.__dict__["inner"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"
