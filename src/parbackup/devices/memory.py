"""An in-process device for tests and experiments: objects live in a dict.

``memory://NAME`` devices with the same NAME share their store within one process, so a
test can back up to ``memory://a`` and restore from it later.
"""

from __future__ import annotations

import threading

from parbackup.devices.base import Device, ObjectInfo, ObjectWriter
from parbackup.devices.url import DeviceURL
from parbackup.errors import DeviceMissingError
from parbackup.model import Capabilities, Space

_STORES: dict[str, dict[str, bytes]] = {}
_LOCK = threading.Lock()


class _MemoryWriter(ObjectWriter):
    def __init__(self, store: dict[str, bytes], name: str) -> None:
        self.store, self.name, self.parts = store, name, bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.parts += data

    def commit(self) -> None:
        with _LOCK:
            self.store[self.name] = bytes(self.parts)

    def abort(self) -> None:
        self.parts = bytearray()


class MemoryDevice(Device):
    """``memory://NAME``: a dict of objects shared by every device of that NAME."""

    scheme = "memory"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=64)

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(url)
        key = url.host + url.path
        with _LOCK:
            self.store = _STORES.setdefault(key, {})

    def open(self, write: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def raw_space(self) -> Space:
        return Space(free=None, capacity=None)

    def create(self, name: str) -> ObjectWriter:
        return self.capped(_MemoryWriter(self.store, name))

    def read(self, name: str, offset: int, length: int) -> bytes:
        try:
            data = self.store[name]
        except KeyError as exc:
            raise DeviceMissingError(f"{self.url.display}: no object {name}") from exc
        return data[offset : offset + length]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        with _LOCK:
            items = sorted(self.store.items())
        return [ObjectInfo(n, len(d)) for n, d in items if n.startswith(prefix)]

    def delete(self, name: str) -> None:
        with _LOCK:
            self.store.pop(name, None)
