"""Bytes values (a file's path and link, a record's checksum) reach SQLite through an
identity adapter the catalog registers (catalog/schema.py): found at once in the sqlite3
module's adapters, not through the failing ``__adapt__`` look-up the module makes for
every value of a type it does not bind directly. The values stored do not change."""

from __future__ import annotations

import os
import sqlite3

from parbackup.catalog import Catalog
from parbackup.engine.prepare import scan, source_specs

SET = "ab" * 16
LABEL = "0123456789abcdef0123456789abcdef"


def test_bytes_have_an_identity_adapter():
    adapt = sqlite3.adapters.get((bytes, sqlite3.PrepareProtocol))
    assert adapt is not None
    for value in (b"", b"\xff\x00/a b", os.urandom(32)):
        assert adapt(value) is value


def test_paths_links_and_checksums_are_stored_as_the_same_blobs(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    odd = os.fsencode(str(tree)) + b"/n\xffo"  # a name that is not UTF-8
    with open(odd, "wb") as fh:
        fh.write(b"x" * 10)
    os.symlink(b"../t\xfeo", os.fsencode(str(tree)) + b"/link")
    entries = scan(source_specs([str(tree)]), [])
    digests = [bytes([i]) * 32 for i in range(len(entries))] + [b"\x00" * 32]
    rows = [(f, "sets/v-0001.pbv", 100 * f, 64, 0, 10, digests[f], -1) for f in range(len(entries))]
    with Catalog(str(tmp_path / "c.sqlite")) as cat:
        cat.begin_set(SET, strategy="fill", order="desc", threshold=0, sources=[str(tree)])
        cat.add_entries(SET, entries)
        cat.add_record_rows(SET, LABEL, rows)
        stored = cat.db.execute(
            "SELECT file_id, typeof(path), path, typeof(link), link FROM files ORDER BY file_id"
        ).fetchall()
        sums = cat.db.execute(
            "SELECT file_id, typeof(checksum), checksum FROM records ORDER BY file_id"
        ).fetchall()
    paths = {p for _, _, p, _, _ in stored}
    assert odd in paths
    assert {t for _, t, _, _, _ in stored} == {"blob"}
    assert {t for _, _, _, t, _ in stored} == {"blob"}
    assert b"../t\xfeo" in {link for *_, link in stored}
    assert sums == [(f, "blob", digests[f]) for f in range(len(entries))]
