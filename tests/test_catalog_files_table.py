"""The catalog's ``files`` table is keyed by (set, file id) alone (WITHOUT ROWID in
catalogs made since session 9): the key is stored once, not again in an index of its
own, so a million files make a catalog ~10% smaller to write and to copy onto every
device. Catalogs made before keep their table, which answers the same SQL."""

from __future__ import annotations

import sqlite3

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.catalog.schema import SCHEMA
from parbackup.engine.prepare import scan, source_specs

SETS = ("ab" * 16, "01" * 16)


def _files_sql(path: str) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT sql FROM sqlite_master WHERE name='files'").fetchone()[0]
    finally:
        db.close()


def _two_sets(tmp_path, path: str, older: bool) -> list:
    """Record one tree as two sets (the second in the catalog sorts first by id); then
    forget the first. Returns the files of the first set afterwards."""
    tree = make_tree(tmp_path / "tree", seed=5, files=20, max_size=100)
    entries = scan(source_specs([str(tree)]), [])
    if older:  # the files table as parbackup made it before session 9
        a = SCHEMA.index("CREATE TABLE IF NOT EXISTS sets")
        b = SCHEMA.index("CREATE TABLE IF NOT EXISTS records")
        db = sqlite3.connect(path)
        db.executescript(SCHEMA[a:b].replace(") WITHOUT ROWID;", ");"))
        db.close()
    with Catalog(path) as cat:
        for set_id in SETS:
            cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["x"])
            for start in range(len(entries) - 7, -7, -7):  # runs, the last first
                cat.add_entries(set_id, entries, range(max(0, start), start + 7))
            cat.mark_files(set_id, [3], "skipped")
        second = [(f.file_id, f.entry.path, f.state) for f in cat.files(SETS[1])]
        cat.forget_set(SETS[0])
        first = list(cat.files(SETS[0]))
    assert [fid for fid, _, _ in second] == list(range(len(entries)))
    assert [p for _, p, _ in second] == [entries.entry(i).path for i in range(len(entries))]
    assert [fid for fid, _, state in second if state == "skipped"] == [3]
    return first


def test_a_new_catalog_keeps_files_in_key_order_without_a_rowid(tmp_path):
    path = str(tmp_path / "c.sqlite")
    first = _two_sets(tmp_path, path, older=False)
    assert "WITHOUT ROWID" in _files_sql(path)
    assert first == []


def test_an_older_catalog_keeps_its_files_table_and_answers_the_same(tmp_path):
    path = str(tmp_path / "c.sqlite")
    first = _two_sets(tmp_path, path, older=True)
    assert "WITHOUT ROWID" not in _files_sql(path)
    assert first == []
