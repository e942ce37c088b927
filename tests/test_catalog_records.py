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
