"""The catalog's side tables: devices (where each label was last seen, its measured
speed), a backup's progress samples (for ``report``), the parity stripe of a set (kept
as a ``meta`` value), and files' extended attributes.

A mixin of ``Catalog`` (store.py), like liverows.py: these methods use its connection
(``db``), its transactions and its bulk loads (``_insert``), so they run unchanged on
every backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


class SideRows:
    """Devices, progress samples, parity stripes and extended attributes (mixed into
    Catalog)."""

    db: Any
    transaction: Any
    _insert: Any
    set_meta: Any
    meta: Any

    def remember_device(self, label: str, url: str, kind: str) -> None:
        """Remember the URL a device label was last seen at."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO devices (label, url, kind) VALUES (?, ?, ?)"
                " ON CONFLICT(label) DO UPDATE SET url=excluded.url, kind=excluded.kind",
                (label, url, kind),
            )

    def forget_device(self, label: str) -> None:
        """Stop knowing a device whose medium was written over (a reused tape): nothing
        of it is left to reach, clean or restore from."""
        with self.transaction():
            self.db.execute("DELETE FROM devices WHERE label=?", (label,))

    def device_urls(self) -> dict[str, str]:
        """label -> last known URL of every device the catalog has seen."""
        return dict(self.db.execute("SELECT label, url FROM devices").fetchall())

    def record_speed(self, label: str, rate: float) -> None:
        """Remember a device's measured throughput (bytes/s), averaged with the last one."""
        with self.transaction():
            self.db.execute(
                "UPDATE devices SET speed = CASE WHEN speed IS NULL OR speed <= 0 THEN ?"
                " ELSE (speed + ?) / 2 END WHERE label = ?",
                (rate, rate, label),
            )

    def device_speeds(self) -> dict[str, float]:
        """label -> throughput (bytes/s) measured in earlier backups, where known."""
        rows = self.db.execute("SELECT label, speed FROM devices WHERE speed > 0").fetchall()
        return {label: float(speed) for label, speed in rows}

    def add_progress(self, set_id: str, samples: Iterable[tuple]) -> None:
        """Store a backup's per-device samples: (seconds, device URL, bytes, event,
        redirected) rows, bounded by the caller (engine/samples.py)."""
        rows = [(set_id, i, *row) for i, row in enumerate(samples)]
        with self.transaction():
            self._insert(
                "INSERT INTO progress (set_id, seq, seconds, device, bytes, event, redirected)",
                7,
                rows,
            )

    def progress(self, set_id: str) -> list[tuple]:
        """A set's samples as (seconds, device URL, bytes, event, redirected), in order;
        none for a set made before they were kept (or a catalog too old to hold them)."""
        return self.db.execute(
            "SELECT seconds, device, bytes, event, redirected FROM progress"
            " WHERE set_id=? ORDER BY seq",
            (set_id,),
        ).fetchall()

    def set_parity(self, set_id: str, info: dict) -> None:
        """Remember where a set's parity lies (engine/parity.py; kept in ``meta``)."""
        self.set_meta(f"parity:{set_id}", json.dumps(info, sort_keys=True))

    def parity(self, set_id: str) -> dict | None:
        """What ``set_parity`` remembered for a set; None for a set without parity."""
        found = self.meta(f"parity:{set_id}")
        return json.loads(found) if found else None

    def set_without_xattrs(self, set_id: str) -> None:
        """Remember that a set was taken with ``--no-xattrs`` (its files' extended
        attributes were not read: an incremental child must not take them as none)."""
        self.set_meta(f"noxattrs:{set_id}", "1")

    def has_xattrs(self, set_id: str) -> bool:
        """False for a set taken with ``--no-xattrs`` (``set_without_xattrs``)."""
        return not self.meta(f"noxattrs:{set_id}")

    def file_metas(self, set_id: str) -> dict[int, bytes]:
        """File id -> extended attributes (xattrs payload) of the set's files that have
        any (an older catalog opened read-only gains the empty table in memory)."""
        cur = self.db.execute("SELECT file_id, meta FROM file_meta WHERE set_id=?", (set_id,))
        return {r[0]: bytes(r[1]) for r in cur}

    def add_file_metas(self, set_id: str, rows: list[tuple[int, bytes]]) -> None:
        """Give files of a set their extended attributes, ``(file id, payload)`` each, in
        place of any the set held for them (a file a failed device had read is read
        again by another)."""
        if not rows:
            return
        with self.transaction():
            self.db.executemany(
                "DELETE FROM file_meta WHERE set_id=? AND file_id=?",
                ((set_id, fid) for fid, _ in rows),
            )
            self._insert(META_INSERT, 3, ((set_id, fid, meta) for fid, meta in rows))


META_INSERT = "INSERT INTO file_meta (set_id, file_id, meta)"
