"""The catalog's side of liveness: the rows catalog/liveness.py decides over, the one
transaction that moves records into a compacted volume, retiring sets (``forget``) and
forgetting dead ones, and the
``meta`` values (such as the mark of a half-written rebuilt catalog).

A mixin of ``Catalog`` (store.py) so that store.py stays the only module that opens
SQLite; these methods use its connection and transactions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Set
from contextlib import AbstractContextManager
from typing import Any

from parbackup.catalog.liveness import (
    SetNode,
    SetStatus,
    VolumeUse,
    pinned,
    roots,
    running_ids,
)
from parbackup.errors import CatalogError

SET_META = ("parity:", "noxattrs:")
"""Prefixes of the ``meta`` keys that belong to one set (``<prefix><set id>``): they go
with the set (``forget_set``, ``clear``)."""


class LivenessRows:
    """Reads for liveness and the record switch of a compaction (mixed into Catalog)."""

    db: Any  # sqlite3.Connection, set by Catalog
    transaction: Callable[[], AbstractContextManager[None]]  # Catalog.transaction
    path: str
    volume_numbers: Callable[..., dict[tuple[str, str], int]]  # RecordRows'
    drop_unused_volumes: Callable[[], None]  # RecordRows'

    def set_nodes(self) -> list[SetNode]:
        """Every set as liveness sees it (id, status, resumed set, failed devices), by seq."""
        failed: dict[str, set[str]] = {}
        for set_id, label in self.db.execute(
            "SELECT set_id, label FROM set_devices WHERE status='failed'"
        ):
            failed.setdefault(set_id, set()).add(label)
        out = []
        for set_id, status, resumed in self.db.execute(
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

    def live_use(
        self, root_ids: Set[str], in_sets: Set[str] | None = None
    ) -> dict[str, dict[str, VolumeUse]]:
        """label -> volume -> what the roots' records occupy there (each record once).

        ``in_sets``: only volumes of those sets (the ones a clean-up may touch), so a
        catalog of many large restorable sets is not read whole at every backup.
        """
        roots_json = json.dumps(sorted(root_ids))
        if in_sets is None:
            where, args = "set_id IN (SELECT value FROM json_each(?))", [roots_json]
        else:
            where = (
                "set_id IN (SELECT value FROM json_each(?)) AND ("
                " origin_set IN (SELECT value FROM json_each(?))"
                " OR (origin_set = '' AND set_id IN (SELECT value FROM json_each(?))))"
            )
            sets_json = json.dumps(sorted(in_sets))
            args = [roots_json, sets_json, sets_json]
        rows = self.db.execute(
            "SELECT label, volume, COUNT(*), COALESCE(SUM(len), 0) FROM ("
            " SELECT DISTINCT label, volume, position,"
            " header_size + (CASE WHEN stored < 0 THEN size ELSE stored END) AS len"
            f" FROM record_places WHERE {where}) AS live GROUP BY label, volume",
            args,
        ).fetchall()
        out: dict[str, dict[str, VolumeUse]] = {}
        for label, volume, count, nbytes in rows:
            out.setdefault(label, {})[volume] = VolumeUse(count, nbytes)
        return out

    def tape_labels(self) -> dict[str, str]:
        """label -> last known URL of every tape (sequential device) the catalog knows."""
        return dict(self.db.execute("SELECT label, url FROM devices WHERE kind='tape'").fetchall())

    def labels_in_use(self, root_ids: Set[str], whole_ids: Set[str]) -> tuple[set[str], set[str]]:
        """(labels a root lists a record on, labels a set of ``whole_ids`` wrote to and did
        not fail on): what ``liveness.free_tapes`` decides over."""
        live = self.db.execute(
            "SELECT DISTINCT label FROM record_places"
            " WHERE set_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(root_ids)),),
        ).fetchall()
        busy = self.db.execute(
            "SELECT DISTINCT label FROM set_devices WHERE status != 'failed'"
            " AND set_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(whole_ids)),),
        ).fetchall()
        return {r[0] for r in live}, {r[0] for r in busy}

    def drop_dead_records(self, set_ids: Set[str]) -> None:
        """Forget the records of the given (dead) sets, all in one transaction."""
        with self.transaction():
            cur = self.db.execute(
                "DELETE FROM records WHERE set_id IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(set_ids)),),
            )
            if cur.rowcount:
                self.drop_unused_volumes()

    def referenced_sets(self, root_ids: Set[str]) -> set[str]:
        """Ids of the sets whose volumes hold records a root lists (besides the roots)."""
        rows = self.db.execute(
            "SELECT DISTINCT origin_set FROM records WHERE origin_set != ''"
            " AND set_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(root_ids)),),
        ).fetchall()
        return {r[0] for r in rows}

    def live_extents(
        self, root_ids: Set[str], label: str, volume: str
    ) -> list[tuple[int, int, bytes]]:
        """(position, length, checksum) of the live records in one volume, by position."""
        rows = self.db.execute(
            "SELECT DISTINCT position,"
            " header_size + (CASE WHEN stored < 0 THEN size ELSE stored END), checksum"
            " FROM record_places WHERE label=? AND volume=?"
            " AND set_id IN (SELECT value FROM json_each(?))"
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
        with self.transaction():
            old = self.db.execute(
                "SELECT num FROM volumes WHERE label=? AND name=?", (label, volume)
            ).fetchone()
            if old is None:  # no record lies there
                return 0
            new = self.volume_numbers([(label, new_volume)])[label, new_volume]
            self.db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS moves (old INTEGER PRIMARY KEY, new INTEGER)"
            )
            self.db.execute("DELETE FROM temp.moves")
            self.db.executemany("INSERT INTO temp.moves VALUES (?, ?)", sorted(moves.items()))
            cur = self.db.execute(
                "UPDATE records SET vol=?, position=(SELECT new FROM temp.moves"
                " WHERE old=records.position) WHERE vol=?"
                " AND position IN (SELECT old FROM temp.moves)",
                (new, old[0]),
            )
            self.db.execute("DELETE FROM temp.moves")
        return cur.rowcount

    def meta(self, key: str) -> str | None:
        """A value of the catalog's ``meta`` table, or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_items(self, prefix: str) -> dict[str, str]:
        """Every ``meta`` value whose key starts with ``prefix``, by key."""
        rows = self.db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or, with None, remove) a value of the ``meta`` table."""
        with self.transaction():
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )

    def mark_forgotten(self, set_ids: Set[str]) -> list[str]:
        """Retire restorable sets (``forget``): status 'forgotten', their file and record
        rows dropped, all in one transaction, so a kill leaves either every one of them
        forgotten or none. Only complete and degraded sets change; returns the ids that
        did. Nothing leaves a device here: the next prune (liveness) reclaims what no
        live set reuses. (A kept set's rows that point into a forgotten set's volumes are
        the kept set's own: they stay; nothing reads a forgotten set's rows.)"""
        ids = json.dumps(sorted(set_ids))
        with self.transaction():
            rows = self.db.execute(
                "SELECT id FROM sets WHERE id IN (SELECT value FROM json_each(?))"
                " AND status IN ('complete', 'degraded') ORDER BY seq",
                (ids,),
            ).fetchall()
            gone = json.dumps([r[0] for r in rows])
            for table in ("records", "files", "file_meta"):
                self.db.execute(
                    f"DELETE FROM {table} WHERE set_id IN (SELECT value FROM json_each(?))",
                    (gone,),
                )
            if rows:
                self.drop_unused_volumes()
            self.db.execute(
                "UPDATE sets SET status='forgotten' WHERE id IN (SELECT value FROM json_each(?))",
                (gone,),
            )
        return [r[0] for r in rows]

    def forget_set(self, set_id: str) -> None:
        """Remove a set that holds nothing restorable (interrupted, failed, or forgotten
        and no longer read) entirely, with what ``meta`` keeps of it (``SET_META``: its
        parity stripe, ...). Such keys whose set is gone (left by an older version) go too."""
        with self.transaction():
            for table in ("records", "files", "file_meta", "set_devices"):
                cur = self.db.execute(f"DELETE FROM {table} WHERE set_id=?", (set_id,))
                if table == "records" and cur.rowcount:
                    self.drop_unused_volumes()
            self.db.execute("DELETE FROM sets WHERE id=?", (set_id,))
            for prefix in SET_META:
                self.db.execute("DELETE FROM meta WHERE key=?", (f"{prefix}{set_id}",))
                self.db.execute(
                    f"DELETE FROM meta WHERE key LIKE '{prefix}%'"
                    f" AND substr(key, {len(prefix) + 1}) NOT IN (SELECT id FROM sets)"
                )

    def is_empty(self) -> bool:
        """True when the catalog holds no set and knows no device."""
        row = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM sets) + (SELECT COUNT(*) FROM devices)"
        ).fetchone()
        return int(row[0]) == 0

    def clear(self) -> None:
        """Remove every set and device (what a killed rebuild-catalog left), at once."""
        with self.transaction():
            for table in ("records", "volumes", "files", "set_devices", "sets", "devices"):
                self.db.execute(f"DELETE FROM {table}")
            for prefix in SET_META:
                self.db.execute(f"DELETE FROM meta WHERE key LIKE '{prefix}%'")
