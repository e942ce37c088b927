"""What the remote kinds (sftp.py, s3.py) share: a reader over a file as it was opened.

A remote file is read in ranges with no lock on it, so the reader takes the file's size
when it is opened as its end: a range the file no longer holds means it shrank, and is
reported as ``SourceChanged``; growth shows in ``identity()`` after the read.

Messages of a file's errors do not name the file: the engine puts its path in front.
"""

from __future__ import annotations

from abc import abstractmethod

from parbackup.sources.base import FileReader, Identity, Source, SourceChanged

CHANGED = "file changed while being read"
SHRANK = "file shrank while being read"


def check_unchanged(source: Source, expect: Identity | None, now: Identity) -> None:
    """Raise SourceChanged when ``now`` differs from what the scan saw (``expect``)."""
    if expect is not None and (diff := source.changes(expect, now)):
        raise SourceChanged(f"file changed since the scan ({', '.join(diff)})")


class SizedReader(FileReader):
    """Reads ``[0, size)`` of one file through ``fetch``; see the module docstring."""

    def __init__(self, size: int) -> None:
        self.size = size

    @abstractmethod
    def fetch(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer if the file shrank); SourceError if not."""

    def readinto(self, offset: int, view: memoryview) -> int:
        want = max(0, min(len(view), self.size - offset))
        if not want:
            return 0
        data = self.fetch(offset, want)
        if len(data) != want:
            raise SourceChanged(SHRANK)
        view[:want] = data
        return want
