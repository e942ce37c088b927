"""A local file put onto a device as one object, with a heartbeat on every read.

Both ends of a backup copy files onto devices this way: the controller's catalog
copies (engine/catalog_copy.py) and a mover's ``Put`` (engine/mover.py). A device takes
the file chunk by chunk through ``put_stream``; each chunk it asks for means the last
one went through, so ``beat`` is called there, and a watcher can tell a copy that moves
from one that hangs on a slow or dead link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from parbackup.devices.base import Device


def put_file(
    device: Device, name: str, path: str, beat: Callable[[], None], patch: tuple[int, bytes]
) -> None:
    """Put the file at ``path`` onto ``device`` as ``name``, calling ``beat`` on every
    read; ``patch`` (offset, bytes) stands for the file's bytes at that offset."""
    with open(path, "rb") as fh:
        device.put_stream(name, _Beating(fh, beat, patch))


class _Beating:
    """The file as ``put_stream`` reads it: ``beat`` before every read, ``patch`` laid
    over the bytes read."""

    def __init__(self, fh: BinaryIO, beat: Callable[[], None], patch: tuple[int, bytes]) -> None:
        self.fh, self.beat, self.patch, self.pos = fh, beat, patch, 0

    def read(self, n: int = -1) -> bytes:
        self.beat()
        data = self.fh.read(n)
        at, new = self.patch
        start, self.pos = self.pos, self.pos + len(data)
        lo, hi = max(at, start), min(at + len(new), self.pos)
        if lo >= hi:
            return data
        out = bytearray(data)
        out[lo - start : hi - start] = new[lo - at : hi - at]
        return bytes(out)
