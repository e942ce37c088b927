"""The small interface every backup device implements, with its contract.

A device is a flat namespace of named objects (``label.json``, ``sets/<id>/<vol>.pbv``,
``catalog/catalog.sqlite``). A kind must supply seven operations:

``open(write)`` connect and check the device is usable; raise DeviceError if not. With
                ``write=False`` the caller will only read: the kind writes nothing (no
                probe file, no directories made, a tape opened for reading only), so
                read-only media (optical discs, ``ro`` mounts) work. A kind may refuse
                writes after a read-only open. A configuration mistake found on opening
                (a directory device that is a regular file) raises UsageError.
``close()``     release connections; never raises.
``space()``     free bytes and capacity (None where the medium cannot tell).
``create(n)``   a new object written front to back through an ObjectWriter; the object is
                durable once ``ObjectWriter.commit()`` returns.
``read(n,o,l)`` ``l`` bytes of object ``n`` from offset ``o`` (short only at the end).
``list(p)``     the objects whose names start with ``p``, with their sizes.
``delete(n)``   remove an object; a missing object is not an error.

Everything else (small objects, labels, streaming reads) has a default built on those.

Leftovers: a writer that never committed (its process was killed) may leave something
behind that ``list`` does not show: an open multipart upload on S3, a ``NAME.tmp-PID``
file of ``replace`` on a directory or SFTP host. ``unfinished(prefix)`` lists them and
``discard(name)`` removes one; the clean-up (engine/reclaim.py) decides which may go.
The defaults say there are none.

Errors: implementations raise only DeviceError subclasses. ``TransientDeviceError`` means
"retrying the same call may succeed" (a dropped connection, throttling); any other
DeviceError is permanent for the run and makes the engine fail the device over.
``DeviceFullError`` means the medium or its configured capacity is exhausted.

Options: every kind declares the URL query options it understands (``options``);
``COMMON_OPTIONS`` apply to every kind and wrappers add theirs, so the registry refuses
an unknown option (``?limt=1K``) as a UsageError before anything is opened. A kind's
``check_url`` refuses other mistakes that the URL alone shows (``s3://`` with no bucket).

Labels: ``ensure_label`` writes a label at first use only. A device without a label that
already holds parbackup data (``sets/`` or ``catalog/`` objects: its ``label.json`` was
lost) is never relabelled: ``UnlabelledDataError`` names it and the way back. A new
label never replaces one another run (through another catalog) put there meanwhile,
where the kind can tell (``put_label_if_absent``): that run's label is taken instead.

Capabilities are data (``Capabilities``), so the engine asks ``device.capabilities.
sequential`` instead of checking classes. ``?capacity=SIZE`` caps any kind: the device
then reports at most that much free space, minus what it already holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, ClassVar
from uuid import uuid4

from parbackup.devices.url import DeviceURL
from parbackup.errors import DeviceError, DeviceFullError, DeviceMissingError
from parbackup.model import Capabilities, Label, Space

LABEL_NAME = "label.json"
DATA_PREFIXES = ("sets/", "catalog/")
TMP_MARK = ".tmp-"
"""What ``replace`` puts in the temporary name of an object until it commits."""
"""Objects that only a labelled device holds: volumes and the catalog copy."""
COMMON_OPTIONS = frozenset({"capacity", "speed", "host"})
"""URL options of every kind: ``?capacity=SIZE`` (here), ``?speed=RATE`` (a hint the
engine's ``--balance`` reads) and ``?host=NAME`` (the cluster worker the device is
attached to, parbackup/cluster.py; ignored without ``--cluster``)."""
ACCEPT_NEW_HOST_KEYS_ENV = "PARBACKUP_ACCEPT_NEW_HOST_KEYS"
"""When "1", remote kinds learn unknown host keys on first use (OpenSSH ``accept-new``)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A name on a device and its size in bytes."""

    name: str
    size: int


class UnlabelledDataError(DeviceError):
    """A device holds parbackup data but no label: it must not be relabelled silently."""


def require_still_named(display: str, name: str, mine: tuple, named: tuple | None) -> None:
    """DeviceError unless the file at ``name`` (its identity ``named``, None when gone)
    is the one being written (``mine``). A file deleted or replaced while written took
    its bytes where no reader looks, and the set was called complete; a writer checks
    at each checkpoint and at commit, so the device fails and its work goes elsewhere."""
    if named != mine:
        raise DeviceError(f"{display}: {name} was deleted or replaced while it was written")


class ObjectWriter(ABC):
    """A stream into one new object. Not thread-safe; one writer per object."""

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; raise DeviceError (DeviceFullError when out of room).
        ``data`` is the caller's again once this returns (the mover reuses its gather
        buffer): a writer that keeps bytes for later copies them."""

    @abstractmethod
    def commit(self) -> None:
        """Make everything written durable and the object visible under its name."""

    @abstractmethod
    def abort(self) -> None:
        """Give up the object; never raises."""

    def checkpoint(self) -> bool:
        """Make what was written so far durable if the kind can; True if it did."""
        return False


class ForwardingWriter(ObjectWriter):
    """A writer that passes every call to ``inner``; subclasses override what they change.

    The base of every writer wrapper (``CappedWriter`` here, devices.wrappers).
    """

    def __init__(self, inner: ObjectWriter) -> None:
        self.inner = inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def commit(self) -> None:
        self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()

    def checkpoint(self) -> bool:
        return self.inner.checkpoint()


class CappedWriter(ForwardingWriter):
    """Wraps a writer so that it refuses to go past ``room`` bytes (``?capacity=``)."""

    def __init__(self, inner: ObjectWriter, room: int, where: str) -> None:
        super().__init__(inner)
        self.room, self.where, self.written = room, where, 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.written + len(data) > self.room:
            raise DeviceFullError(f"{self.where}: configured capacity reached")
        self.inner.write(data)
        self.written += len(data)


class Device(ABC):
    """One backup device, named by a URL. See the module docstring for the contract."""

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    options: ClassVar[frozenset[str]] = frozenset()
    """The URL query options this kind understands, besides ``COMMON_OPTIONS``."""
    overwrote: str = ""
    """The label of a medium this device wrote over when it started writing (a tape
    image reused for a new backup); '' if none. Every set on that label is gone."""

    def __init__(self, url: DeviceURL) -> None:
        self.url = url
        self.capacity = url.capacity

    @classmethod
    def check_url(cls, url: DeviceURL) -> None:
        """Raise UsageError for a mistake the URL alone shows (no I/O); default: none."""
        return None

    # -- what a kind must supply -------------------------------------------------------
    @abstractmethod
    def open(self, write: bool = True) -> None:
        """Connect and check the device is usable (for writing unless ``write=False``)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and handles."""

    @abstractmethod
    def raw_space(self) -> Space:
        """Free space and capacity as the medium reports them (None where unknown)."""

    @abstractmethod
    def create(self, name: str) -> ObjectWriter:
        """Start writing a new object called ``name``."""

    @abstractmethod
    def read(self, name: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of ``name`` from ``offset``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose names start with ``prefix``."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove an object; missing is fine."""

    # -- defaults built on the seven -------------------------------------------------------
    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        """``read`` as a view. A kind that can read straight into the caller's reusable
        ``buf`` (no fresh allocation, no page faults per read) does so when it is large
        enough; the view is then good only until the caller's next read into ``buf``."""
        return memoryview(self.read(name, offset, length))

    def space(self) -> Space:
        """Free space, capped by ``?capacity=`` minus what the device already holds."""
        raw = self.raw_space()
        if self.capacity is None:
            return raw
        used = sum(o.size for o in self.list(""))
        free_cap = max(0, self.capacity - used)
        free = free_cap if raw.free is None else min(raw.free, free_cap)
        return Space(free=free, capacity=self.capacity)

    def capped(self, writer: ObjectWriter) -> ObjectWriter:
        """``writer`` limited to the room ``?capacity=`` leaves; kinds wrap their writers."""
        if self.capacity is None:
            return writer
        used = sum(o.size for o in self.list(""))
        return CappedWriter(writer, max(0, self.capacity - used), self.url.display)

    def replace(self, name: str) -> ObjectWriter:
        """A writer whose commit replaces ``name`` at once (old or new, never half)."""
        return self.create(name)

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects started under ``prefix`` but never committed (see the module docstring);
        each name is what ``discard`` takes."""
        return []

    def discard(self, name: str) -> None:
        """Remove one leftover ``unfinished`` listed; a missing one is not an error. Where
        leftovers are objects of their own (a ``.tmp-`` file), that is ``delete``."""
        self.delete(name)

    def put(self, name: str, data: bytes) -> None:
        """Write a small object in one go, replacing any old one."""
        writer = self.replace(name)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def put_stream(self, name: str, stream: BinaryIO, chunk: int = 1 << 20) -> None:
        """Copy a file-like object onto the device as ``name``, replacing any old one."""
        writer = self.replace(name)
        try:
            while data := stream.read(chunk):
                writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def get(self, name: str) -> bytes:
        """Read a whole (small) object."""
        size = self.size(name)
        return self.read(name, 0, size)

    def size(self, name: str) -> int:
        """The size of one object; DeviceMissingError if absent."""
        for info in self.list(name):
            if info.name == name:
                return info.size
        raise DeviceMissingError(f"{self.url.display}: no object {name}")

    def open_read(self, name: str, chunk: int = 8 << 20) -> BinaryIO:
        """A sequential reader over an object (buffered range reads)."""
        raw = _RangeReader(self, name, self.size(name), chunk)
        return io.BufferedReader(raw, chunk)  # type: ignore[arg-type]

    def read_label(self) -> Label | None:
        """The label written on the device, or None if it has none yet."""
        if not self.has_label():
            return None
        return parse_label(
            self.get(LABEL_NAME),
            f"{self.url.display}: unreadable device label ({LABEL_NAME} is damaged: "
            f"`parbackup relabel {self.url.display}` writes back the label its volumes carry)",
        )

    def has_label(self) -> bool:
        """True when the device holds a ``label.json`` (readable or not)."""
        return any(o.name == LABEL_NAME for o in self.list(LABEL_NAME))

    def ensure_label(self) -> Label:
        """Read the device's label, writing a new one at first use (REQUIREMENTS D4)."""
        label = self.read_label()
        if label is not None:
            return label
        if any(self.list(prefix) for prefix in DATA_PREFIXES):
            raise UnlabelledDataError(
                f"{self.url.display}: {LABEL_NAME} is missing but the device holds "
                "parbackup volumes; it is not relabelled (its sets would be lost to the "
                f"catalog). Put {LABEL_NAME} back: `parbackup relabel {self.url.display}` "
                "writes the label its volume headers carry"
            )
        self.check_new_label()
        label = Label(
            label=uuid4().hex,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            kind=self.scheme,
        )
        return self.write_new_label(label)

    def check_new_label(self) -> None:
        """DeviceError when this device must not be labelled as a new one (a directory
        where a disk is not mounted: devices/local.py); by default it may."""
        return None

    def write_new_label(self, label: Label) -> Label:
        """Write ``label`` on a device that had none; the label it carries then: another
        run's (through another catalog) that labelled it since this one looked, where
        the kind puts a label in place only if none is there (``put_label_if_absent``)."""
        self.put_label_if_absent(label)
        carried = self.read_label()
        if carried is None:
            raise DeviceError(f"{self.url.display}: {LABEL_NAME} vanished as it was written")
        return carried

    def put_label_if_absent(self, label: Label) -> None:
        """Put ``label`` in place unless the device carries one, which is left as it is.
        Here written over any (the later of two runs' labels wins); a kind that can do
        better says how (``_put_label_by_move``: a directory, an SFTP host; S3)."""
        self.write_label(label)

    def _put_label_by_move(self, label: Label, move: Callable[[str, str], None]) -> None:
        """``put_label_if_absent`` where a whole file can be given a name only if the name
        is free: the label written and committed as ``label.json.tmp-PID-TID``, then
        ``move(tmp, LABEL_NAME)``, which never replaces a label and raises DeviceError
        when it did not move (a label in place is then another run's, and kept). The
        temporary object is deleted in every case (a killed run's, by a prune)."""
        tmp = f"{LABEL_NAME}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
        writer = self.create(tmp)
        try:
            writer.write(label_bytes(label))
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        try:
            move(tmp, LABEL_NAME)
        except DeviceError:
            if not self.has_label():
                raise  # not moved, and no label there: a real failure
        finally:
            with contextlib.suppress(DeviceError):
                self.delete(tmp)

    def write_label(self, label: Label) -> None:
        """Write ``label`` as the device's ``label.json`` (first use, or putting it back)."""
        self.put(LABEL_NAME, label_bytes(label))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.display}>"


def parse_label(data: bytes, error: str) -> Label:
    """The label in a ``label.json`` body; DeviceError(``error``) if it is not one."""
    try:
        body = json.loads(data)
        if not _is_label_id(body["label"]):  # a tampered label: every volume name uses it
            raise ValueError(f"label {body['label']!r} is not 32 hex digits")
        return Label(
            label=str(body["label"]),
            created=str(body["created"]),
            kind=str(body["kind"]),
            format_version=int(body.get("format_version", 1)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeviceError(error) from exc


def _is_label_id(value: object) -> bool:
    """True for a label as parbackup makes them (``uuid4().hex``: 32 hex digits)."""
    if not isinstance(value, str) or len(value) != 32:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


class ReadOnlyDevice(Device):
    """A kind that only reads others' volumes (decoded, shared): it reports no space, and
    opening it for writing, creating or deleting is a DeviceError naming its kind."""

    def read_only(self) -> DeviceError:
        return DeviceError(f"{self.url.display}: a {self.scheme} device is read-only")

    def raw_space(self) -> Space:
        return Space(free=0, capacity=None)

    def create(self, name: str) -> ObjectWriter:
        raise self.read_only()

    def delete(self, name: str) -> None:
        raise self.read_only()


def label_bytes(label: Label) -> bytes:
    """The ``label.json`` body for ``label``."""
    body = {
        "label": label.label,
        "created": label.created,
        "kind": label.kind,
        "format_version": label.format_version,
        "tool": "parbackup",
    }
    return json.dumps(body, indent=2).encode() + b"\n"


class _RangeReader(io.RawIOBase):
    """A raw, read-only stream over ``Device.read`` so BufferedReader can wrap it."""

    def __init__(self, device: Device, name: str, size: int, chunk: int) -> None:
        self.device, self.name, self.total, self.pos = device, name, size, 0
        self.chunk = chunk

    def readall(self) -> bytes:
        """The rest of the object in ``chunk``-sized reads (not io's 8 KiB default)."""
        out = bytearray()
        while self.pos < self.total:
            data = self.device.read(self.name, self.pos, min(self.chunk, self.total - self.pos))
            if not data:
                break
            out += data
            self.pos += len(data)
        return bytes(out)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.total - self.pos)
        if want <= 0:
            return 0
        data = self.device.read(self.name, self.pos, want)
        n = len(data)
        buffer[:n] = data
        self.pos += n
        return n
