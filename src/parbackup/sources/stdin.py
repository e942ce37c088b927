"""A stream on standard input as a source (REQUIREMENTS F2): a database dump, a tar.

The stream is one FILE entry (``-`` as the source, the name from ``--stdin-name``); its
size is known only at its end. Only the process that owns standard input can read it,
front to back: the backup's dispatcher reads it in segments and hands each to a mover
with its bytes (engine/dispatch.py ``StreamFeed``), in bounded memory.
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO

from parbackup.entries import FILE, Entries
from parbackup.errors import SourceError
from parbackup.sources.base import ErrorFunc, FileReader, Identity, Source, SourceSpec

STREAM_MODE = 0o100600


class _StreamReader(FileReader):
    """Reads the stream front to back; ``offset`` must be where the last read ended."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.at = stream, 0

    def readinto(self, offset: int, view: memoryview) -> int:
        if offset != self.at:
            raise SourceError("a stream is read front to back only")
        got = 0
        while got < len(view):
            n = self.stream.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
        self.at += got
        return got

    def identity(self) -> Identity:
        return Identity(self.at, 0)

    def close(self) -> None:
        pass


class StdinSource(Source):
    """Standard input, recorded as ``/<name>`` (``SourceSpec`` kind "stdin")."""

    fields: tuple[str, ...] = ()

    def __init__(self, spec: SourceSpec, stream: BinaryIO | None = None) -> None:
        super().__init__(spec)
        self.stream = stream if stream is not None else sys.stdin.buffer

    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        path = "/" + self.spec.record_root.lstrip("/")
        uid, gid = os.getuid(), os.getgid()
        out.append(os.fsencode(path), FILE, 0, STREAM_MODE, uid, gid, time.time_ns(), source=index)

    def open(self, path: str | bytes, expect: Identity | None = None) -> FileReader:
        path = os.fsdecode(path)
        return _StreamReader(self.stream)
