"""The messages between the dispatcher and a mover (engine/mover.py documents the
conversation). Plain picklable values, imported by both sides: the dispatcher's process
never needs the mover's own imports.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, islice, repeat
from operator import itemgetter
from typing import TYPE_CHECKING

from parbackup.format import CHUNK
from parbackup.model import Space
from parbackup.sources.base import SourceSpec

if TYPE_CHECKING:  # only a set with a codec or parity sends them (unpickling imports)
    from parbackup.crypto.codec import CodecSpec
    from parbackup.engine.paritytee import ParityLink


@dataclass(frozen=True, slots=True)
class MoverSpec:
    """Everything a mover needs, as picklable words."""

    index: int
    url: str
    sources: tuple[SourceSpec, ...] = ()
    chunk: int = CHUNK
    checkpoint_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True)
class Label:
    pass


@dataclass(frozen=True, slots=True)
class Probe:
    limit: int = 16 << 20
    seconds: float = 0.5


@dataclass(frozen=True, slots=True)
class Begin:
    set_id: bytes
    meta: dict
    codec: CodecSpec | None = None
    """How records are stored (compression, key): None writes format versions 1-2."""
    parity: ParityLink | None = None
    """Where to forward the column's stream for parity while writing (engine/paritytee.py)."""


@dataclass(frozen=True, slots=True)
class Work:
    """Items in list order, sent as columns (a batch of small files pickles as a few
    arrays and one blob, not as a tuple of 18 objects per item); ``items()`` gives them
    back as the tuples the mover takes (``SEQ`` ... ``META`` below).

    ``columns``: one array per field ``FID`` ... ``SRC``, each of the batch's length.
    Item ``i``'s path is ``paths[path_at[i]:path_at[i + 1]]`` (its root included);
    ``links``, ``data`` and ``metas`` are lists of the batch's length, or None when
    every item has b"", None and b"" there (a tree without links; not a stream; no
    extended attributes).
    """

    first: int
    """The sequence number of the first item; the others follow one by one."""
    columns: tuple[array, ...]
    paths: bytes
    path_at: array
    links: list[bytes] | None = None
    data: list[bytes] | None = None
    metas: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.path_at) - 1

    def items(self) -> Iterator[tuple]:
        """The items as tuples, made by C loops only (zip, map): no Python per item."""
        n = len(self)
        at, paths = self.path_at, self.paths
        names = itemgetter(*map(slice, at, islice(at, 1, None)))(paths) if n > 1 else (paths,)
        return zip(
            count(self.first),
            *self.columns,
            names,
            repeat(b"", n) if self.links is None else self.links,
            repeat(None, n) if self.data is None else self.data,
            repeat(b"", n) if self.metas is None else self.metas,
        )


@dataclass(frozen=True, slots=True)
class Finish:
    pass


@dataclass(frozen=True, slots=True)
class Put:
    name: str
    path: str
    patch: tuple[int, bytes] = (0, b"")  # (offset, bytes) put instead of the file's there


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Started:
    """The mover's process is up and about to open its device: the device's timeout
    counts from here, not from the process's start (slow on a loaded machine)."""


@dataclass(frozen=True, slots=True)
class Opened:
    label: str | None
    space: Space
    scheme: str
    sequential: bool


@dataclass(frozen=True, slots=True)
class Labelled:
    label: str
    overwrote: str = ""
    """The label of the medium labelling wrote over (a reused tape), '' if none."""


@dataclass(frozen=True, slots=True)
class Speed:
    rate: float


@dataclass(frozen=True, slots=True)
class Progress:
    sent: int
    done: int
    busy: float


@dataclass(frozen=True, slots=True)
class Durable:
    """Every record in ``columns`` is durable, and so is every item up to ``upto``.

    A record is ``(file id, volume, position, header size, offset, size, checksum,
    stored)``; they travel as columns (``of``), like ``Work``'s items: one ``array`` of
    64-bit ints per int field, a tuple for the volumes and one for the checksums. The
    controller unpickles no tuple per record and stores the columns as they are
    (``Catalog.add_record_columns``); ``rows()`` gives the records back as tuples.
    """

    upto: int
    columns: tuple

    @classmethod
    def of(cls, upto: int, rows: list[tuple]) -> Durable:
        """The message for a mover's record tuples (transposed here, in the mover)."""
        cols = tuple(zip(*rows, strict=True)) or ((),) * _RECORD_FIELDS
        return cls(
            upto, tuple(c if i in _OBJECT_FIELDS else array("q", c) for i, c in enumerate(cols))
        )

    def rows(self) -> list[tuple]:
        """The records as ``(file id, volume, ..., stored)`` tuples."""
        return list(zip(*self.columns, strict=True))

    @property
    def sizes(self) -> array:
        """Each record's payload size (what the device holds of the set's bytes)."""
        return self.columns[5]


_RECORD_FIELDS = 8
_OBJECT_FIELDS = (1, 6)
"""A record's fields that are not ints: its volume's name and its checksum."""


@dataclass(frozen=True, slots=True)
class Metas:
    """Extended attributes the mover read from the files it opened (a local tree leaves
    a regular file's to its reader), sent just before the ``Durable`` that covers those
    files: ``(file id, payload, warning)`` each, payload b"" when they could not be kept
    (then the warning says why)."""

    rows: list


@dataclass(frozen=True, slots=True)
class Problem:
    file: int
    error: str
    kind: str
    """"skipped" (unreadable), "changed" (inconsistent) or "grew" (kept as read)."""


@dataclass(frozen=True, slots=True)
class Committed:
    pass


@dataclass(frozen=True, slots=True)
class Stored:
    name: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    usage: bool = False
    """A configuration mistake found on opening (exit 2), not a device failure."""


# A work item: (seq, file id, offset, size, kind index, file size, mode, uid, gid,
# mtime_ns, ctime_ns, ino, dev, source number, path bytes, link bytes, data or None,
# extended attributes: an xattrs payload, b"" when none)
SEQ, FID, OFF, SIZE, KIND, FSIZE, MODE, UID, GID, MTIME, CTIME, INO, DEV, SRC = range(14)
PATH, LINK, DATA, META = 14, 15, 16, 17
