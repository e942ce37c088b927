"""The one interface every source kind implements: scan, open a byte range, say what changed.

A source is one root named by the user: a local tree, a block device or disk image, a
remote tree (``sftp://``, ``s3://``) or standard input (``-``). It is described by a
picklable ``SourceSpec`` so that a mover in another process (or on another host) opens
the same source from the same words (``open_source`` in sources/registry.py).

Contract of a kind (a ``Source`` subclass):

``scan(out, index, on_error)``
    Append every entry of the source to ``out`` (an ``entries.Entries`` table) with
    source number ``index``, root first, depth first, sorted by name, each path once.
    Paths are recorded as the user named them (``record_root``), whatever ``read_root``
    they are read from (a snapshot). A path that cannot be read goes to
    ``on_error(path, reason)`` and is skipped; it never ends the scan. Raises
    SourceError only when the root itself cannot be read at all. What ``spec.select``
    leaves out goes to ``self.excluded`` (local trees; other kinds are scanned whole).
``open(path, expect=None)``
    A ``FileReader`` over one regular file (``path`` as recorded). ``expect`` is what the
    scan saw; a file that is no longer the same file (another inode or device, not a
    regular file any more, reached through a symlink) raises ``SourceChanged`` before a
    byte is read (or, where the kind can only tell after opening, before a byte is
    handed out). Never follows a symlink, never blocks on a FIFO.
``identity(path)``
    What the source can tell of the file now, or None if it is gone.

``FileReader.readinto(offset, view)`` fills ``view`` from ``offset`` and returns how
many bytes it read (fewer only at the end of the file); ``identity()`` says what the
file looks like now (after reading: so a change during the read is seen);
``close()`` releases it. Errors are ``SourceError`` (the file is skipped and reported).
``xattrs()`` gives the open file's extended attributes for a kind whose scan leaves a
regular file's to the reader (local trees: read from the descriptor the data came
through, so a million files cost the scan no call each); None where the scan gave them.

``changes(old, new)`` names what differs between two identities, limited to what this
kind can tell (``fields``): remote trees know only size and whole-second mtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from parbackup.entries import Entries, clamp_ns
from parbackup.errors import SourceError
from parbackup.selection import NO_SELECTION, Excluded, ScanRules

ErrorFunc = Callable[[str, str], None]
"""on_error(path, reason): a path that could not be backed up, and why."""

ALL_FIELDS = ("size", "mtime", "ctime", "inode", "device")


class SourceChanged(SourceError):
    """The file is not the one the scan saw, or changed while it was read."""


class SourceGrew(SourceChanged):
    """The file only grew while it was read (a live log): what was read, up to the size
    the scan saw, is kept and restored with a warning. ``fields`` names what changed."""

    fields = ""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to open a source again, in any process: picklable words, no open objects.

    ``kind`` is "tree", "blockdev", "sftp", "s3" or "stdin". ``name`` is what the user
    gave (a path or URL, secrets included: never printed; see ``display``).
    ``record_root`` is the path entries are recorded under, ``read_root`` where they are
    read from when that differs (a snapshot); ``display`` is the name safe to show and
    store in the catalog. ``select`` is what a scan of a local tree leaves out (other
    kinds are scanned whole). ``xattrs``: read each entry's extended attributes (ACLs,
    capabilities; ``backup --no-xattrs`` turns it off). ``host``: the cluster host the
    tree lies on (``PATH?host=NAME``, docs/CLUSTER.md); ``via``: where the other hosts
    read it (``IP:PORT/KEY`` of its file server for the run, secret: never printed;
    sources/hosted.py).
    """

    kind: str
    name: str
    record_root: str
    read_root: str = ""
    display: str = ""
    select: ScanRules = NO_SELECTION
    xattrs: bool = True
    host: str = ""
    via: str = ""


class Identity(NamedTuple):
    """What a source can tell of one file at one moment (a tuple: made twice per file
    on the movers' hot path, and compared as one)."""

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    ino: int = 0
    dev: int = 0


def identity_of(entries: Entries, i: int) -> Identity:
    """The identity the scan recorded for entry ``i``."""
    return Identity(
        entries.size[i], entries.mtime_ns[i], entries.ctime_ns[i], entries.ino[i], entries.dev[i]
    )


class FileReader(ABC):
    """Reads byte ranges of one open file (see the module docstring)."""

    @abstractmethod
    def readinto(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` with the bytes at ``offset``; how many (short only at the end)."""

    @abstractmethod
    def identity(self) -> Identity:
        """The file as it is now."""

    @abstractmethod
    def close(self) -> None:
        """Release the file; never raises."""

    def xattrs(self) -> tuple[bytes, str] | None:
        """(payload, warning) of the open file's extended attributes (parbackup/xattrs.py)
        when this source reads them here rather than in its scan; None otherwise."""
        return None

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Source(ABC):
    """One root to back up; see the module docstring for the contract."""

    fields: tuple[str, ...] = ALL_FIELDS
    """The identity fields this kind can tell apart."""
    content_identity: bool = False
    """True where the identity changes with the content itself (an S3 object's ETag),
    not only with a clock: then a change made in the same tick of a coarse clock as the
    earlier read still shows, and an incremental need not copy such a file again
    (``plan.reuse.racy``)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.excluded = Excluded()
        """What the scan left out by ``spec.select``, per rule."""

    @abstractmethod
    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        """Append every entry of the source to ``out`` as source number ``index``."""

    @abstractmethod
    def open(self, path: str | bytes, expect: Identity | None = None) -> FileReader:
        """A reader over the regular file recorded as ``path`` (str, or its bytes)."""

    def read_whole(
        self, path: str | bytes, expect: Identity, view: memoryview, attrs: bool
    ) -> tuple[bytes, str] | None:
        """A fast path for small files (optional): open the regular file recorded as
        ``path``, fill ``view`` with all its bytes, check that it is still ``expect``,
        read its extended attributes when ``attrs`` (what ``FileReader.xattrs`` gives,
        ``(b"", "")`` when not asked) and close it, in one call. None when the kind has no
        such path or anything was not as expected (an error, a short read, a change): the
        caller then takes ``open`` and its reader, which say what went wrong."""
        return None

    def identity(self, path: str) -> Identity | None:
        """The file recorded as ``path`` as it is now; None when it is gone."""
        try:
            with self.open(path) as reader:
                return reader.identity()
        except SourceError:
            return None

    def changes(self, old: Identity, new: Identity) -> list[str]:
        """Which of this kind's identity fields differ between ``old`` and ``new``."""
        if old == new:  # the common case, one tuple comparison
            return []
        pairs = {
            "size": (old.size, new.size),
            "mtime": (old.mtime_ns, clamp_ns(new.mtime_ns)),  # as the scan held it
            "ctime": (old.ctime_ns, clamp_ns(new.ctime_ns)),
            "inode": (old.ino, new.ino),
            "device": (old.dev, new.dev),
        }
        return [f for f in self.fields if pairs[f][0] != pairs[f][1]]

    def check(self, old: Identity, new: Identity) -> None:
        """Raise SourceGrew when the file only grew (same inode and device, larger),
        SourceChanged for any other change this kind can tell; nothing when unchanged."""
        changed = self.changes(old, new)
        if not changed:
            return
        what = ", ".join(changed)
        if new.size > old.size and not {"inode", "device"} & set(changed):
            grew = SourceGrew(f"file grew while being read ({what}): {old.size} bytes kept")
            grew.fields = what
            raise grew
        raise SourceChanged(f"file changed while being read ({what})")

    def close(self) -> None:  # noqa: B027 - most kinds hold nothing to release
        """Release connections; never raises."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
