"""Writing parity volumes and rebuilding columns, one row at a time (bounded memory).

Works over anything with a device's ``read(name, offset, length)`` and ``create(name)``
(devices/base.py ``Device``), so it needs no device module: the engine and readback
hand it opened devices. Every column is read front to back, in the order its volumes
were written, so a tape is read in one pass. Memory: one row (k+m units) at a time.

A data unit that cannot be read (device gone, volume missing or cut short, an error) or
whose digest does not match the one the row record keeps counts as *lost*; a row
decodes while no more than m of its k+m units are lost.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from parbackup.errors import FormatError, ParbackupError
from parbackup.redundancy.codec import CODEC, RowCodec
from parbackup.redundancy.layout import UNIT, Column, row_count
from parbackup.redundancy.volume import (
    STREAMED,
    WRITTEN_VERSION,
    ParityHeader,
    RowRecord,
    complete_header,
    encode_row,
    end_of,
    parity_name,
    read_parity_header,
    read_row,
    row_record_size,
    unit_digest,
)


class Store(Protocol):
    """What stripe needs of a device (devices/base.py ``Device`` has it)."""

    def read(self, name: str, offset: int, length: int) -> bytes: ...
    def create(self, name: str) -> Any: ...
    def open_read(self, name: str) -> Any: ...
    def size(self, name: str) -> int: ...


class ColumnReader:
    """A column's stream, unit by unit, zero-padded past its end; ``None`` for a unit
    that could not be read whole (``store`` None: the device is missing).

    Each volume is read through one sequential stream (``open_read``), front to back,
    so a tape is not rewound for every unit."""

    def __init__(self, store: Store | None, column: Column, unit: int) -> None:
        self.store, self.column, self.unit = store, column, unit
        self.row = 0
        self.broken: set[str] = set()
        self.streams: dict[str, Any] = {}
        self.at: dict[str, int] = {}

    def _read_into(self, name: str, offset: int, view: memoryview) -> bool:
        stream = self.streams.get(name)
        if stream is None or self.at[name] != offset:
            self.close()
            assert self.store is not None
            stream = self.streams[name] = self.store.open_read(name)
            self.at[name] = 0
            while self.at[name] < offset:  # only after a broken unit: skip forward
                got = stream.read(min(offset - self.at[name], 1 << 20))
                if not got:
                    return False
                self.at[name] += len(got)
        done = 0
        while done < len(view):
            got = stream.readinto(view[done:])
            if not got:
                return False
            done += got
        self.at[name] += done
        return True

    def fill(self, view: memoryview) -> bool:
        """Read the next unit into ``view`` (``unit`` bytes, zero-padded); False if it
        could not be read whole."""
        start = self.row * self.unit
        self.row += 1
        if start >= self.column.length:
            self.close()
            view[:] = bytes(len(view))
            return True
        if self.store is None:
            return False
        at = 0
        for name, offset, n in self.column.spans(start, self.unit):
            if name in self.broken:
                return False
            try:
                ok = self._read_into(name, offset, view[at : at + n])
            except (ParbackupError, OSError):
                ok = False
            if not ok:
                self.broken.add(name)
                self.close()
                return False
            at += n
        if at < len(view):
            view[at:] = bytes(len(view) - at)
        return True

    def next(self) -> bytes | None:
        """The next unit as bytes, or None if it could not be read whole."""
        buf = bytearray(self.unit)
        return bytes(buf) if self.fill(memoryview(buf)) else None

    def close(self) -> None:
        """Close the volume streams held open; never raises."""
        for stream in self.streams.values():
            with contextlib.suppress(Exception):
                stream.close()
        self.streams.clear()
        self.at.clear()


class ColumnWriter:
    """Writes a column's stream back into its volumes (same names and sizes)."""

    def __init__(self, store: Store, column: Column) -> None:
        self.store, self.column = store, column
        self.queue = list(column.volumes)
        self.writer: Any = None
        self.left = 0
        self.written: list[tuple[str, int]] = []

    def _next_volume(self) -> None:
        name, size = self.queue.pop(0)
        self.writer = self.store.create(name)
        self.left = size
        self.current = (name, size)
        if size == 0:
            self._commit()

    def _commit(self) -> None:
        self.writer.commit()
        self.written.append(self.current)
        self.writer = None

    def write(self, data: bytes) -> None:
        """Append stream bytes (padding past the column's end is dropped)."""
        view = memoryview(data)
        while view:
            if self.writer is None:
                if not self.queue:
                    return  # padding
                self._next_volume()
                continue
            take = min(self.left, len(view))
            self.writer.write(view[:take])
            self.left -= take
            view = view[take:]
            if self.left == 0:
                self._commit()

    def finish(self) -> list[tuple[str, int]]:
        while self.writer is not None or self.queue:
            if self.writer is None:
                self._next_volume()
            else:
                raise FormatError(f"{self.current[0]}: rebuilt stream ended early")
        return self.written

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.abort()


class CopyWriter(ColumnWriter):
    """A present column copied as a rebuild reads it (readback/recover.py: a surviving
    tape's, so the restore reads it once): only a saving. Where its room runs out it
    stops and gives its volumes back (``finished`` is then False), so the rebuild of
    the missing columns goes on instead of failing for want of room it never needed."""

    def __init__(self, store: Store, column: Column) -> None:
        super().__init__(store, column)
        self.failed = False

    def write(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            super().write(data)
        except (ParbackupError, OSError):
            self.give_up()

    def finished(self) -> bool:
        """Whether the copy is whole (False once it gave up)."""
        if not self.failed:
            try:
                super().finish()
            except (ParbackupError, OSError):
                self.give_up()
        return not self.failed

    def finish(self) -> list[tuple[str, int]]:
        return self.written

    def give_up(self) -> None:
        self.failed = True
        self.abort()
        delete = getattr(self.store, "delete", None)  # a device has it (not every Store)
        for name, _size in self.written:
            with contextlib.suppress(Exception):
                if delete is not None:
                    delete(name)
        self.written = []


def write_parity(
    set_id: bytes,
    columns: Sequence[tuple[Column, Store]],
    parity: Sequence[tuple[str, Store]],
    *,
    unit: int = UNIT,
    created_ns: int = 0,
    on_row: Callable[[int], None] = lambda row: None,
) -> list[tuple[str, str, int]]:
    """Read every data column, write one parity volume on every parity store.

    Returns (label, object name, size) of each parity volume written. A data column
    that cannot be read whole raises FormatError: parity is computed from what is on
    the devices, never from a guess. The volumes are of the version the parity written
    while writing has (``WRITTEN_VERSION``: rows, volumes and XXH3-128 unit digests as
    redundancy/streamed.py writes them), so a set's parity reads the same whichever way
    it was written.
    """
    k, m = len(columns), len(parity)
    codec = RowCodec(k, m, unit)
    cols = tuple(c for c, _s in columns)
    rows = row_count(cols, unit)
    labels = tuple(label for label, _s in parity)
    readers = [ColumnReader(store, col, unit) for col, store in columns]
    writers: list[tuple[str, str, Any]] = []
    sizes = [0] * m
    pool = ThreadPoolExecutor(1, thread_name_prefix="parity-read")
    version = WRITTEN_VERSION
    try:
        for i, (label, store) in enumerate(parity):
            header = ParityHeader(
                set_id, label, i, CODEC, k, m, unit, rows, cols, labels, created_ns,
                version=version,
            )  # fmt: skip
            head = header.encode()
            name = parity_name(set_id.hex(), label, i)
            w = store.create(name)
            writers.append((label, name, w))
            w.write(head)
            sizes[i] += len(head)
        ahead = pool.submit(_read_row, readers, unit)
        for row in range(rows):
            data = ahead.result()
            if row + 1 < rows:  # the next row is read while this one is coded and written
                ahead = pool.submit(_read_row, readers, unit)
            if isinstance(data, int):
                raise FormatError(f"parity: column {cols[data].label} cannot be read at row {row}")
            out, frags = codec.encode_row(data)
            view = memoryview(data)
            digests = tuple(
                [unit_digest(view[j * unit : (j + 1) * unit], version) for j in range(k)]
                + [unit_digest(u, version) for u in out]
            )
            for i, (_label, _name, w) in enumerate(writers):
                rec = RowRecord(set_id, row, CODEC, k, m, i, unit, digests, tuple(frags))
                head = encode_row(rec, version)
                w.write(head)
                w.write(out[i])
                sizes[i] += len(head) + unit
            on_row(row)
        pool.shutdown(wait=True)
        for r in readers:
            r.close()
        end = end_of(header)
        for i, (_label, _name, w) in enumerate(writers):
            w.write(end)
            sizes[i] += len(end)
            w.commit()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for r in readers:
            r.close()
        for _label, _name, w in writers:
            with contextlib.suppress(Exception):
                w.abort()
        raise
    return [(label, name, sizes[i]) for i, (label, name, _w) in enumerate(writers)]


def _read_row(readers: Sequence[ColumnReader], unit: int) -> bytes | int:
    """The next row's data units back to back, or the index of a column that failed."""
    buf = bytearray(len(readers) * unit)
    view = memoryview(buf)
    for j, reader in enumerate(readers):
        if not reader.fill(view[j * unit : (j + 1) * unit]):
            return j
    return bytes(buf)


class ParityReader:
    """A parity volume's rows in order; ``None`` for a row that cannot be read.

    Rows are read from one sequential stream. After a damaged row record the stream's
    place is lost; with ``store`` and ``name`` the reader then fetches each later row at
    its own offset (every row record has the same size), so one bad record costs one
    row of this parity, not the rest of the volume."""

    def __init__(
        self, stream: Any, header: ParityHeader, store: Store | None = None, name: str = ""
    ) -> None:
        self.stream, self.header, self.store, self.name = stream, header, store, name
        self.dead = stream is None
        self.row = 0
        self.step = row_record_size(header.k, header.m, header.version) + header.unit
        self.random = False

    def next(self) -> tuple[RowRecord, bytes] | None:
        if self.dead or self.row >= self.header.rows:
            return None
        row = self.row
        self.row += 1
        try:
            if self.random:
                assert self.store is not None
                at = self.header.length + row * self.step
                blob = self.store.read(self.name, at, self.step)
                got = read_row(io.BytesIO(blob), self.header)
            else:
                got = read_row(self.stream, self.header)
        except (ParbackupError, OSError):
            got = None
        if got is not None and got[0].row == row:
            return got
        if self.store is None or not self.name or not self.header.length:
            self.dead = True
        else:
            self.random = True
        return None


HEADER_CHUNK = 64 << 10
"""Reads of a parity volume opened for its header only (``open_parity``)."""


def open_parity(store: Store, name: str, chunk: int = 8 << 20) -> tuple[Any, ParityHeader]:
    """A parity volume opened for one sequential pass, and its header (a version-2 or 3
    header completed from the volume's end record: ``complete_header``). ``chunk`` is
    how much each read of the stream asks for: small where only the header is wanted
    (each open reads a chunk, 8 MiB by default: 16 MiB of a parity device's link for
    two headers)."""
    stream = store.open_read(name, chunk)
    try:
        header = read_parity_header(stream)
        if header.version in STREAMED:
            # the end record is read first, on a stream of its own: on a tape, reading
            # elsewhere moves the one stream there is, so this one is opened again
            stream.close()
            header = complete_header(store, name, header)
            stream = store.open_read(name, chunk)
            left = header.length
            while left > 0:
                got = stream.read(min(left, 1 << 20))
                if not got:
                    raise FormatError("unexpected end of parity volume")
                left -= len(got)
        return stream, header
    except BaseException:
        with contextlib.suppress(Exception):
            stream.close()
        raise


@dataclass
class RowOutcome:
    """What checking or rebuilding the rows found, per column label."""

    rows: int = 0
    lost_units: dict[str, int] = field(default_factory=dict)
    """label -> units that could not be read or did not match their digest."""
    unrecoverable: list[int] = field(default_factory=list)
    """Rows that lost more units than there are parities."""

    def lose(self, label: str) -> None:
        self.lost_units[label] = self.lost_units.get(label, 0) + 1


def walk_rows(
    header: ParityHeader,
    data: dict[str, Store | None],
    parity: dict[int, ParityReader],
    *,
    targets: dict[str, ColumnWriter] | None = None,
    parity_targets: dict[int, Any] | None = None,
) -> RowOutcome:
    """Read every row: check each unit against its digest, decode the lost ones where
    the row allows, and write the rebuilt columns to ``targets`` (label -> writer) and
    rebuilt parity streams to ``parity_targets`` (index -> object writer).

    ``data`` maps a column label to its device (None: missing). Rows that cannot be
    decoded are listed in the outcome; from the first of them on nothing more is
    written (the targets are then incomplete and the caller must abort them).
    """
    k, m, unit, version = header.k, header.m, header.unit, header.version
    codec = RowCodec(k, m, unit, header.codec)
    readers = [ColumnReader(data.get(c.label), c, unit) for c in header.columns]
    out = RowOutcome(rows=header.rows)
    try:
        for row in range(header.rows):
            units: dict[int, bytes] = {}
            record: RowRecord | None = None
            for i in range(m):
                reader = parity.get(i)
                got = reader.next() if reader is not None else None
                if got is not None and got[0].row == row:
                    record = record or got[0]
                    units[k + i] = got[1]
                else:
                    out.lose(header.parity[i])
            for j, reader in enumerate(readers):
                unit_bytes = reader.next()
                label = header.columns[j].label
                if unit_bytes is None:
                    out.lose(label)
                    continue
                if record is not None and unit_digest(unit_bytes, version) != record.digests[j]:
                    out.lose(label)
                    continue
                units[j] = unit_bytes
            if len(units) < k:
                out.unrecoverable.append(row)
                continue
            if not (targets or parity_targets) or out.unrecoverable:
                continue  # after a lost row the targets would be misaligned: only count
            if record is None:  # every parity unit of the row is lost: the data is whole
                data_units = [units[j] for j in range(k)]
                parity_units, fragments = codec.encode(data_units)
                whole = data_units + parity_units
            else:
                fragments = list(record.fragments)
                try:
                    whole = codec.decode(units, fragments)
                except FormatError:
                    out.unrecoverable.append(row)
                    continue
            for j, c in enumerate(header.columns):
                if targets and c.label in targets:
                    targets[c.label].write(whole[j])
            digests = tuple(unit_digest(u, version) for u in whole)
            for i, w in (parity_targets or {}).items():
                rec = RowRecord(
                    header.set_id, row, header.codec, k, m, i, unit, digests, tuple(fragments)
                )
                w.write(encode_row(rec, header.version))
                w.write(whole[k + i])
    finally:
        for r in readers:
            r.close()
    return out
