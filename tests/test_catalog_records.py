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
            catalog, "SELECT file_id FROM records WHERE set_id=? AND label=?", (SET, LABEL)
        )
        assert "records_by_set" in plan, plan


def test_a_movers_records_keep_their_set_and_label_as_given(tmp_path) -> None:
    """A mover's rows go in with the set and label written into the statement: the
    stored values are the same text as bound ones, quotes and all, in any number of
    statements (more rows than one holds, and a last partial one)."""
    path = str(tmp_path / "c.sqlite")
    odd = "it's a 'label'"
    with Catalog(path) as catalog:
        catalog.begin_set(SET, strategy="fill", order="desc", threshold=0, sources=["/s"])
        rows = [
            (fid, "v", fid * 100, 60, 0, fid, bytes([fid % 256]) * 32, -1) for fid in range(600)
        ]
        catalog.add_record_rows(SET, odd, rows)
        catalog.add_record_rows(SET, LABEL, rows[:1])
        got = catalog.db.execute(
            "SELECT set_id, label, file_id, volume, position, header_size, offset, size,"
            " checksum, stored FROM records WHERE label = ? ORDER BY file_id",
            (odd,),
        ).fetchall()
        assert got == [(SET, odd, *r) for r in rows]
        assert sorted(catalog.records_on(SET, LABEL)) == [(0, 0, 0)]
        assert catalog.db.execute(
            "SELECT typeof(set_id), typeof(label) FROM records GROUP BY 1, 2"
        ).fetchall() == [("text", "text")]
