"""Writing version-3 parity volumes from units that arrive while the data is written.

``StreamedParity`` owns the m parity volumes of one set: each data unit given to ``add``
is summed into its row (redundancy/accumulate.py); every row that becomes complete is
written at once, row after row, to every parity volume (redundancy/volume.py, version
2); ``finish`` writes the end records, with the columns' volumes, and commits. Works
over anything with a device's ``create`` (no I/O of its own besides the spill file), so
the parity worker (engine/paritystream.py) and the tests drive it alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from parbackup.errors import FormatError
from parbackup.redundancy.accumulate import RowAccumulator
from parbackup.redundancy.codec import CODEC, fragment_headers
from parbackup.redundancy.isal import Updater
from parbackup.redundancy.layout import Column
from parbackup.redundancy.volume import (
    WRITTEN_VERSION,
    ParityHeader,
    RowRecord,
    encode_end_streamed,
    encode_row,
    parity_name,
    unit_digest,
)


class StreamedParity:
    """The parity volumes of one set, written row by row as the units come."""

    def __init__(
        self,
        set_id: bytes,
        columns: Sequence[str],
        parity: Sequence[tuple[str, Any]],
        unit: int,
        *,
        created_ns: int = 0,
        window: int = 32,
        spill_dir: str | None = None,
        fragments: Sequence[bytes] | None = None,
    ) -> None:
        k, m = len(columns), len(parity)
        updater = Updater.load(k, m, unit)
        if updater is None:
            raise FormatError("ISA-L is not available: parity is written after the data")
        self.set_id, self.k, self.m, self.unit = set_id, k, m, unit
        self.labels = list(columns)
        self.acc = RowAccumulator(updater, window=window, spill_dir=spill_dir)
        # the codec's fragment headers depend on (k, m, unit) only: a row of zeros gives
        # them (``fragments``: computed so ahead, by whoever knew k before the set began)
        if fragments is None or len(fragments) != k + m:
            fragments = fragment_headers(k, m, unit)
        self.fragments = tuple(fragments)
        self.volumes: list[tuple[tuple[str, int], ...]] = [()] * k
        self.writers: list[Any] = []
        self.names: list[str] = []
        self.sizes: list[int] = []
        parity_labels = tuple(label for label, _store in parity)
        self.parity_labels = list(parity_labels)
        try:
            for i, (label, store) in enumerate(parity):
                head = ParityHeader(
                    set_id,
                    label,
                    i,
                    CODEC,
                    k,
                    m,
                    unit,
                    0,
                    tuple(Column(c, ()) for c in columns),
                    parity_labels,
                    created_ns,
                    version=WRITTEN_VERSION,
                ).encode()
                name = parity_name(set_id.hex(), label, i)
                w = store.create(name)
                self.writers.append(w)
                self.names.append(name)
                w.write(head)
                self.sizes.append(len(head))
        except BaseException:
            self.abort()
            raise

    def add(self, column: int, row: int, data: int, digest: bytes) -> None:
        """Column ``column``'s unit ``row`` (``unit`` bytes at address ``data``, and its
        digest); the rows it completes are written before this returns."""
        self.acc.add(column, row, data, digest)
        self._write_ready()

    def offer(self, column: int, row: int, data: int, digest: bytes, token: object) -> None:
        """As ``add``, but the unit is read only once its row is complete (the whole row
        encoded in one call) or it is settled: its bytes stay at ``data`` until ``token``
        comes back from ``released`` (redundancy/accumulate.py)."""
        self.acc.offer(column, row, data, digest, token)
        self._write_ready()

    def offered(self, column: int) -> int:
        """Column ``column``'s units offered and not summed yet."""
        return len(self.acc.waiting[column])

    def oldest_offered(self, column: int) -> int:
        """The row of column ``column``'s oldest unit offered and not summed yet."""
        return self.acc.waiting[column][0]

    def settle(self, column: int) -> None:
        """Sum column ``column``'s oldest offered unit now (its token is released)."""
        self.acc.settle(column)

    def released(self) -> list[object]:
        """The tokens of the offered units no longer needed since the last call."""
        out, self.acc.released = self.acc.released, []
        return out

    def fits(self, row: int) -> bool:
        """True when a unit of row ``row`` would be summed in memory, not spilled."""
        return self.acc.fits(row)

    def end(self, column: int, volumes: Sequence[tuple[str, int]]) -> None:
        """Column ``column`` is complete: its stream lies in ``volumes`` (name, size)."""
        self.volumes[column] = tuple(volumes)
        self.acc.end(column)
        self._write_ready()

    @property
    def finished(self) -> bool:
        """Every column ended and every row is written."""
        return self.acc.finished

    def finish(self) -> tuple[list[tuple[str, str, int]], tuple[Column, ...], int]:
        """Write the end records and commit: (label, name, size) of every parity volume,
        the columns and the row count."""
        if not self.finished:
            raise FormatError("parity volumes closed before every column ended")
        rows = self.acc.rows_total
        columns = tuple(Column(label, self.volumes[j]) for j, label in enumerate(self.labels))
        for j, col in enumerate(columns):
            if -(-col.length // self.unit) != self.acc.got[j]:
                raise FormatError(f"column {col.label}: its volumes do not match its units")
        end = encode_end_streamed(self.set_id, rows, columns)
        for i, w in enumerate(self.writers):
            w.write(end)
            w.commit()
            self.sizes[i] += len(end)
        self.writers = []
        self.acc.close()
        return list(zip(self.parity_labels, self.names, self.sizes, strict=True)), columns, rows

    def give_up(self) -> None:
        """Stop summing (a column broke): rows in memory go, units are only taken."""
        self.acc.drop()

    def abort(self) -> None:
        """Give the unfinished volumes up; never raises."""
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.abort()
        self.writers = []
        self.acc.close()

    def _write_ready(self) -> None:
        k, m, unit = self.k, self.m, self.unit
        for row, parity, digests in self.acc.ready():
            units = [parity[i * unit : (i + 1) * unit] for i in range(m)]
            every = tuple(digests + [unit_digest(u, WRITTEN_VERSION) for u in units])
            for i, w in enumerate(self.writers):
                rec = RowRecord(self.set_id, row, CODEC, k, m, i, unit, every, self.fragments)
                head = encode_row(rec, WRITTEN_VERSION)
                w.write(head)
                w.write(units[i])
                self.sizes[i] += len(head) + unit
