"""Where every record lies: the catalog's ``records`` rows, written in batches as movers
make records durable, read back for restore, verify and a failed device's replanning.

A mixin of ``Catalog`` (store.py), like liverows.py: it uses the catalog's connection,
transactions, bulk loads (``_insert``) and streamed reads (``_rows``), so it runs
unchanged on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from parbackup.catalog.schema import one_valued
from parbackup.model import RecordRef

_VOLUME = itemgetter(1)
_RECORDS = "INSERT INTO records (set_id, file_id, vol, position, header_size, offset, size,"
_MOVER_COLUMNS = "file_id", "vol", "position", "header_size", "offset", "size", "checksum", "stored"
"""A mover's records' columns (``add_record_columns``): the volume by name, stored as
its number."""
_IN_LABEL = "vol IN (SELECT num FROM volumes WHERE label=?)"


class RecordRows:
    """The set's record references (mixed into Catalog).

    Rows go into ``records`` with their volume's number (schema 5); every read goes
    through the ``record_places`` view, which gives the label and volume name back.
    """

    db: Any
    transaction: Any
    _insert: Any
    _rows: Any

    def volume_numbers(self, places: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """(label, volume name) -> its ``volumes`` number, a row made for each new one;
        inside the caller's transaction, so the records naming it commit with it."""
        out = {}
        for label, name in places:
            sql = "SELECT num FROM volumes WHERE label=? AND name=?"
            row = self.db.execute(sql, (label, name)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO volumes (label, name) VALUES (?, ?)", (label, name))
                row = self.db.execute(sql, (label, name)).fetchone()
            out[label, name] = int(row[0])
        return out

    def add_records(self, set_id: str, records: Iterable[tuple[int, RecordRef]]) -> None:
        """Record durable records (file id, where it lies)."""
        records = records if isinstance(records, list) else list(records)
        with self.transaction():
            nums = self.volume_numbers(dict.fromkeys((r.label, r.volume) for _f, r in records))
            self._insert(
                _RECORDS + " checksum, origin_set, origin_file, stored)",
                11,
                (
                    (
                        set_id,
                        fid,
                        nums[r.label, r.volume],
                        r.position,
                        r.header_size,
                        r.offset,
                        r.size,
                        r.checksum,
                        r.origin_set,
                        r.origin_file,
                        r.stored,
                    )
                    for fid, r in records
                ),
            )

    def add_record_rows(self, set_id: str, label: str, rows: Iterable[tuple]) -> None:
        """Record durable records of one device as a mover reports them:
        ``(file id, volume, position, header size, offset, size, checksum[, stored])``."""
        rows = rows if isinstance(rows, list) else list(rows)
        if rows and min(map(len, rows)) == 8:  # a mover's: as columns
            self.add_record_columns(set_id, label, tuple(zip(*rows, strict=True)))
            return
        with self.transaction():
            places = self.volume_numbers((label, v) for v in dict.fromkeys(map(_VOLUME, rows)))
            nums = {v: n for (_label, v), n in places.items()}
            self._insert(
                _RECORDS + " checksum, stored)",
                9,
                ((set_id, r[0], nums[r[1]], *r[2:7], r[7] if len(r) > 7 else -1) for r in rows),
            )

    def add_record_columns(self, set_id: str, label: str, columns: Sequence[Sequence]) -> None:
        """Record durable records of one device given as a mover's ``Durable`` carries
        them: eight columns (file id, volume, position, header size, offset, size,
        checksum, stored), one value a record in each (a list, or an ``array`` of ints).
        No tuple is made per record; the set and each one-valued column become the
        statement's literals (``one_valued``)."""
        if not columns[0]:
            return
        with self.transaction():
            places = self.volume_numbers((label, v) for v in dict.fromkeys(columns[1]))
            nums = {v: n for (_label, v), n in places.items()}
            named = dict(zip(_MOVER_COLUMNS, columns, strict=True))
            self._insert(*one_valued("records", {"set_id": set_id}, named, {"vol": nums}))

    def records_on(self, set_id: str, label: str) -> list[tuple[int, int, int]]:
        """(file id, offset, size) of the set's records on one device (a failed device's
        work is read back from here, not kept in memory during the run)."""
        return self.db.execute(
            "SELECT file_id, offset, size FROM record_places WHERE set_id=? AND label=?",
            (set_id, label),
        ).fetchall()

    def drop_records(self, set_id: str, label: str | None = None) -> int:
        """Forget the records of a set (on one device, or all); returns how many."""
        with self.transaction():
            if label is None:
                cur = self.db.execute("DELETE FROM records WHERE set_id=?", (set_id,))
            else:
                cur = self.db.execute(
                    f"DELETE FROM records WHERE set_id=? AND {_IN_LABEL}", (set_id, label)
                )
        return cur.rowcount

    def drop_unused_volumes(self) -> None:
        """Drop the ``volumes`` rows no record points to (after records were deleted;
        inside the caller's transaction). One pass over the records' numbers."""
        self.db.execute("DELETE FROM volumes WHERE num NOT IN (SELECT vol FROM records)")

    def record_rows(self, set_id: str, *, payload_only: bool = False) -> Iterator[tuple]:
        """``records`` as plain rows, no object made per record: (label, file id, volume,
        position, header size, offset, size, checksum, origin set, origin file, stored),
        in no particular order (no sort in the query: each reader orders its own work).
        A restore hands them to its readers as they are (readback/select.py)."""
        return iter(
            self._rows(
                "SELECT label, file_id, volume, position, header_size, offset, size, checksum,"
                " origin_set, origin_file, stored FROM record_places WHERE set_id=?"
                + (" AND size > 0" if payload_only else ""),
                (set_id,),
            )
        )

    def records(
        self, set_id: str, *, payload_only: bool = False
    ) -> Iterator[tuple[int, RecordRef]]:
        """Every record of a set as (file id, where it lies), by device and position;
        only those carrying payload bytes with ``payload_only`` (what a restore reads:
        the query drops the others, no object is made for them)."""
        cur = self._rows(
            "SELECT file_id, label, volume, position, header_size, offset, size, checksum,"
            " origin_set, origin_file, stored FROM record_places WHERE set_id=?"
            + (" AND size > 0" if payload_only else "")
            + " ORDER BY label, volume, position",
            (set_id,),
        )
        for r in cur:
            yield (
                r[0],
                RecordRef(r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), r[8], r[9], r[10]),
            )
