"""Frozen dataclasses shared by every layer. No I/O here, so any layer may import it."""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field


class Kind(enum.StrEnum):
    """What a catalogued path is. Only FILE carries payload bytes."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    """Another name of a regular file met earlier in the scan; ``link`` is that path."""
    FIFO = "fifo"
    SOCKET = "socket"
    DEVICE = "device"
    """A character or block device node (type bits in ``mode``); ``link`` holds the
    device number (``st_rdev``) in decimal."""


class Strategy(enum.StrEnum):
    """How the planner splits files (REQUIREMENTS P2, P3)."""

    FILL = "fill"
    THRESHOLD = "threshold"


class Order(enum.StrEnum):
    """Sort order of the planner's list (REQUIREMENTS P4)."""

    DESC = "desc"
    ASC = "asc"


RESTORABLE_FILE_STATES = frozenset({"ok", "grown"})
"""Catalog file states that restore: whole as scanned, or grown while read (kept as it
was read, up to its scanned size; restored with a warning)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One path found by a scan. ``path`` is absolute; ``source`` is the root it came from.

    Paths are ``str`` decoded with the filesystem encoding and ``surrogateescape``, so
    names that are not valid UTF-8 survive the round trip through ``os.fsencode``.
    ``ctime_ns`` and ``ino`` let an incremental backup tell a changed file (F3).
    ``read_from`` is where the bytes are read when that differs from the recorded
    ``path`` (a snapshot of the live tree, the device a symlink names); "" means ``path``.
    ``meta`` holds its extended attributes (ACLs, capabilities, ...) as the kind-8
    payload of parbackup/xattrs.py; b"" when it has none.
    """

    path: str
    kind: Kind
    size: int
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    link: str = ""
    source: str = ""
    ctime_ns: int = 0
    ino: int = 0
    read_from: str = ""
    meta: bytes = b""

    @property
    def read_path(self) -> str:
        """Where the bytes of this entry are read from."""
        return self.read_from or self.path


@dataclass(frozen=True, slots=True)
class Piece:
    """Planner input: ``size`` bytes of file number ``file`` starting at ``offset``."""

    file: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Slot:
    """Planner input describing one device.

    ``room`` is how many more bytes it can take (None: unlimited), ``load`` how many bytes
    it already holds for this run (non-zero when replanning), ``weight`` its relative share
    (1.0 for equal bytes; its throughput when balancing by time).
    """

    room: int | None
    load: int = 0
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Item:
    """Planner output: a piece of a file assigned to device number ``device``."""

    file: int
    offset: int
    size: int
    device: int


class Pieces:
    """Planner input in columns: piece ``k`` is ``size[k]`` bytes of file ``file[k]`` from
    ``offset[k]``. A million pieces cost 24 MB, not a million objects."""

    __slots__ = ("file", "offset", "ordered", "size")

    def __init__(self) -> None:
        self.file = array("q")
        self.offset = array("q")
        self.size = array("q")
        self.ordered = False
        """True when the pieces are known to be in (file, offset) order already."""

    def __len__(self) -> int:
        return len(self.file)

    def append(self, file: int, offset: int, size: int) -> None:
        self.file.append(file)
        self.offset.append(offset)
        self.size.append(size)

    def __iter__(self) -> Iterator[Piece]:
        return map(Piece, self.file, self.offset, self.size)

    def total(self) -> int:
        return sum(self.size)

    @classmethod
    def whole_files(cls, sizes: array, skip: Set[int] = frozenset()) -> Pieces:
        """One piece per file (all of it), file ids in order, leaving out ``skip``.

        Without ``skip`` nothing is copied: the files are a ``range``, the offsets all
        zero (a ``bytes`` of zeros: one byte a file, read without a Python call) and the
        sizes the given column itself (the planner only reads them).
        """
        out = cls()
        if skip:
            keep = [i for i in range(len(sizes)) if i not in skip]
            out.file = array("q", keep)
            out.size = array("q", [sizes[i] for i in keep])
        else:
            out.file, out.size = range(len(sizes)), sizes  # type: ignore[assignment]
        out.offset = bytes(len(out.file))  # type: ignore[assignment]  # zeros, read in C
        out.ordered = True
        return out

    @classmethod
    def of(cls, pieces: Iterable[Piece]) -> Pieces:
        """Columns from ``Piece`` objects (tests, replans of a few pieces)."""
        if isinstance(pieces, Pieces):
            return pieces
        out = cls()
        for p in pieces:
            out.append(p.file, p.offset, p.size)
        return out


class Plan:
    """An ordered list of items over ``len(shares)`` devices, in columns.

    ``threshold`` is T = total / devices (P1). ``shares`` are the bytes each device is
    meant to receive in this plan. Item ``k`` puts ``size[k]`` bytes of file ``file[k]``
    from ``offset[k]`` on device ``device[k]``; items are in list order, and each device
    writes its own items in that order (W1). ``items`` gives them as ``Item`` objects.
    """

    __slots__ = ("device", "file", "offset", "order", "shares", "size", "strategy", "threshold")

    def __init__(
        self,
        strategy: Strategy,
        order: Order,
        threshold: int,
        shares: tuple[int, ...],
        file: array,
        offset: array,
        size: array,
        device: array,
    ) -> None:
        self.strategy, self.order, self.threshold, self.shares = strategy, order, threshold, shares
        self.file, self.offset, self.size, self.device = file, offset, size, device

    def __len__(self) -> int:
        return len(self.file)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    @property
    def items(self) -> tuple[Item, ...]:
        """Every item as an ``Item`` (small plans, tests)."""
        return tuple(map(Item, self.file, self.offset, self.size, self.device))

    def device_bytes(self) -> list[int]:
        """Bytes assigned to each device."""
        out = [0] * len(self.shares)
        for dev, size in zip(self.device, self.size, strict=True):
            out[dev] += size
        return out

    def segment_counts(self) -> list[int]:
        """Number of items (files or file segments) each device receives."""
        out = [0] * len(self.shares)
        for dev in self.device:
            out[dev] += 1
        return out


@dataclass(frozen=True, slots=True)
class Label:
    """The identity written on a device at first use (REQUIREMENTS D4)."""

    label: str
    created: str
    kind: str
    format_version: int = 1


@dataclass(frozen=True, slots=True)
class Space:
    """What a device can hold: ``free`` bytes now, ``capacity`` in all (None: unknown)."""

    free: int | None
    capacity: int | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a device kind can do, as data so callers never need isinstance checks."""

    sequential: bool = False
    random_read: bool = True
    max_connections: int = 8
    durable_commit: bool = True


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where one record lies: device label, volume name, byte position of its header.

    A record an incremental set reuses lies in an earlier set's volume, and its header
    carries that set's id and file id: ``origin_set`` (hex) and ``origin_file`` name them
    ("" and -1 when the record belongs to the set that lists it).
    """

    label: str
    volume: str
    position: int
    header_size: int
    offset: int
    size: int
    checksum: bytes
    origin_set: str = ""
    origin_file: int = -1
    stored: int = -1
    """Payload bytes on the device when they differ from ``size`` (a compressed or
    encrypted record, format version 4); -1: the record stores ``size`` bytes."""

    @property
    def length(self) -> int:
        """Payload bytes on the device: the record takes ``header_size + length``."""
        return self.size if self.stored < 0 else self.stored


@dataclass
class Skipped:
    """A path that was not backed up, and why."""

    path: str
    error: str


@dataclass
class DeviceReport:
    """Per-device outcome of a backup run."""

    url: str
    label: str
    status: str = "ok"
    bytes: int = 0
    segments: int = 0
    seconds: float = 0.0
    error: str = ""
    failed_at: float | None = None
    failed_utc: str = ""
    redirected: dict[str, int] = field(default_factory=dict)
    speed: float | None = None
    """Bytes/s the plan assumed (``--balance time``, or known from the URL or catalog)."""
    predicted: float | None = None
    """Seconds the device was predicted to need for its share, from ``speed``."""
    finished: float | None = None
    """Seconds from the start of writing until the device committed its last volume."""
    moved: dict[str, int] = field(default_factory=dict)
    """Bytes of not-started work handed to other devices because this one fell behind."""
