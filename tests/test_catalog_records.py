"""The catalog's record references: how they are indexed.

Records arrive in plan order (largest file first), not in file order, so an index on
(set_id, file_id) took every insert to a random page: a million small files spent most
of the dispatcher's time there. Every query of records names its set, so the index is
on set_id alone and inserts append.
"""

from __future__ import annotations

import sqlite3

from parbackup.catalog import Catalog

SET = "ab" * 16
LABEL = "cd" * 16


def _indexes(path: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='records'"
        )
        return {r[0] for r in rows}
    finally:
        db.close()


def _plan(catalog: Catalog, sql: str, params: tuple) -> str:
    return " ".join(r[-1] for r in catalog.db.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_an_older_catalog_is_reindexed_by_set_and_keeps_its_records(tmp_path):
    path = str(tmp_path / "c.sqlite")
    with Catalog(path) as catalog:
        catalog.begin_set(SET, strategy="fill", order="desc", threshold=0, sources=["/s"])
        rows = [(fid, "v", fid * 100, 60, 0, 40, bytes(32), -1) for fid in (7, 3, 9, 1)]
        catalog.add_record_rows(SET, LABEL, rows)
        catalog.finish_set(SET, status="complete", files=4, nbytes=160, report={}, devices=[])
        # as an older parbackup left it
        catalog.db.execute("DROP INDEX records_by_set")
        catalog.db.execute("CREATE INDEX records_by_file ON records(set_id, file_id)")
    assert _indexes(path) >= {"records_by_file"}

    with Catalog(path) as catalog:
        assert "records_by_file" not in _indexes(path)
        assert "records_by_set" in _indexes(path)
        assert sorted(catalog.records_on(SET, LABEL)) == [
            (1, 0, 40),
            (3, 0, 40),
            (7, 0, 40),
            (9, 0, 40),
        ]
        plan = _plan(
            catalog, "SELECT file_id FROM record_places WHERE set_id=? AND label=?", (SET, LABEL)
        )
        assert "records_by_set" in plan, plan


def test_a_movers_records_keep_their_set_label_and_volume_as_given(tmp_path) -> None:
    """A mover's rows go in with the set written into the statement and each volume
    name mapped to its number: read back (``record_places``) the values are the
    same text as bound ones, quotes and all, in any number of statements (more rows than
    one holds, and a last partial one), with several volumes in one batch, and one
    label's volume never taken for another label's of the same name."""
    path = str(tmp_path / "c.sqlite")
    odd = "it's a 'label'"
    names = ["v", "sets/x/it's-0001.pbv", "v'; DROP TABLE records; --", "v2"]
    with Catalog(path) as catalog:
        catalog.begin_set(SET, strategy="fill", order="desc", threshold=0, sources=["/s"])
        rows = [
            (fid, names[fid % 3], fid * 100, 60, 0, fid, bytes([fid % 256]) * 32, -1)
            for fid in range(600)
        ]
        catalog.add_record_rows(SET, odd, rows)
        catalog.add_record_rows(SET, LABEL, [(0, "v2", *rows[0][2:]), (1, "v", *rows[1][2:])])
        got = catalog.db.execute(
            "SELECT set_id, label, file_id, volume, position, header_size, offset, size,"
            " checksum, stored FROM record_places WHERE label = ? ORDER BY file_id",
            (odd,),
        ).fetchall()
        assert got == [(SET, odd, *r) for r in rows]
        assert sorted(catalog.records_on(SET, LABEL)) == [(0, 0, 0), (1, 0, 1)]
        assert catalog.db.execute(
            "SELECT volume FROM record_places WHERE label = ? ORDER BY file_id", (LABEL,)
        ).fetchall() == [("v2",), ("v",)]
        assert catalog.db.execute(
            "SELECT typeof(set_id), typeof(vol) FROM records GROUP BY 1, 2"
        ).fetchall() == [("text", "integer")]
        volumes = catalog.db.execute("SELECT label, name FROM volumes ORDER BY num").fetchall()
        assert volumes == [(odd, n) for n in names[:3]] + [(LABEL, "v2"), (LABEL, "v")]
