"""The catalog's side of liveness: the rows catalog/liveness.py decides over, and the
one transaction that moves records into a compacted volume.

A mixin of ``Catalog`` (store.py) so that store.py stays the only module that opens
SQLite; these methods use its connection and transactions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set

from parbackup.catalog.liveness import (
    SetNode,
    SetStatus,
    VolumeUse,
    pinned,
    roots,
    running_ids,
)
from parbackup.errors import CatalogError


class LivenessRows:
    """Reads for liveness and the record switch of a compaction (mixed into Catalog)."""

    db: object  # sqlite3.Connection, set by Catalog
    path: str

    def set_nodes(self) -> list[SetNode]:
        """Every set as liveness sees it (id, status, resumed set, failed devices), by seq."""
        failed: dict[str, set[str]] = {}
        for set_id, label in self.db.execute(  # type: ignore[attr-defined]
            "SELECT set_id, label FROM set_devices WHERE status='failed'"
        ):
            failed.setdefault(set_id, set()).add(label)
        out = []
        for set_id, status, resumed in self.db.execute(  # type: ignore[attr-defined]
            "SELECT id, status, resumed FROM sets ORDER BY seq"
        ):
            try:
                st = SetStatus(status)
            except ValueError as exc:
                raise CatalogError(f"{self.path} is damaged: set status {status!r}") from exc
            out.append(SetNode(set_id, st, resumed or "", frozenset(failed.get(set_id, ()))))
        return out

    def root_ids(self, keep: Set[str] = frozenset()) -> frozenset[str]:
        """The ids of the root sets now (liveness.roots over ``set_nodes``)."""
        return roots(self.set_nodes(), keep)

    def pinned_ids(self, keep: Set[str] = frozenset()) -> frozenset[str]:
        """The sets whose volumes must stay whole while a run runs (liveness.pinned)."""
        running = running_ids(self.set_nodes(), keep)
        return pinned(running, self.referenced_sets(running))

    def live_use(self, root_ids: Set[str]) -> dict[str, dict[str, VolumeUse]]:
        """label -> volume -> what the roots' records occupy there (each record once)."""
        rows = self.db.execute(  # type: ignore[attr-defined]
            "SELECT label, volume, COUNT(*), COALESCE(SUM(len), 0) FROM ("
            " SELECT DISTINCT label, volume, position, header_size + size AS len FROM records"
            " WHERE set_id IN (SELECT value FROM json_each(?)))"
            " GROUP BY label, volume",
            (json.dumps(sorted(root_ids)),),
        ).fetchall()
        out: dict[str, dict[str, VolumeUse]] = {}
        for label, volume, count, nbytes in rows:
            out.setdefault(label, {})[volume] = VolumeUse(count, nbytes)
        return out

    def referenced_sets(self, root_ids: Set[str]) -> set[str]:
        """Ids of the sets whose volumes hold records a root lists (besides the roots)."""
        rows = self.db.execute(  # type: ignore[attr-defined]
            "SELECT DISTINCT origin_set FROM records WHERE origin_set != ''"
            " AND set_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(root_ids)),),
        ).fetchall()
        return {r[0] for r in rows}

    def live_extents(
        self, root_ids: Set[str], label: str, volume: str
    ) -> list[tuple[int, int, bytes]]:
        """(position, length, checksum) of the live records in one volume, by position."""
        rows = self.db.execute(  # type: ignore[attr-defined]
            "SELECT DISTINCT position, header_size + size, checksum FROM records"
            " WHERE label=? AND volume=? AND set_id IN (SELECT value FROM json_each(?))"
            " ORDER BY position",
            (label, volume, json.dumps(sorted(root_ids))),
        ).fetchall()
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def move_records(
        self, label: str, volume: str, new_volume: str, moves: Mapping[int, int]
    ) -> int:
        """Point every record at (label, volume, old position) to (new_volume, new
        position), for all sets at once, in one transaction; the number of rows moved.

        Records at positions not in ``moves`` keep pointing at the old volume: only
        dead sets' rows may do so (they are dropped with their set).
        """
        with self.transaction():  # type: ignore[attr-defined]
            self.db.execute(  # type: ignore[attr-defined]
                "CREATE TEMP TABLE IF NOT EXISTS moves (old INTEGER PRIMARY KEY, new INTEGER)"
            )
            self.db.execute("DELETE FROM temp.moves")  # type: ignore[attr-defined]
            self.db.executemany(  # type: ignore[attr-defined]
                "INSERT INTO temp.moves VALUES (?, ?)", sorted(moves.items())
            )
            cur = self.db.execute(  # type: ignore[attr-defined]
                "UPDATE records SET volume=?, position=(SELECT new FROM temp.moves"
                " WHERE old=records.position) WHERE label=? AND volume=?"
                " AND position IN (SELECT old FROM temp.moves)",
                (new_volume, label, volume),
            )
            self.db.execute("DELETE FROM temp.moves")  # type: ignore[attr-defined]
        return cur.rowcount
