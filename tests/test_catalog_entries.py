"""``Catalog.add_entries`` records every column of a scan table as the set's files (its
rows are made column by column, issue 10): paths under each source's root, kinds,
links of symlinks and hard links, times, inodes and attributes, whole or in parts."""

from __future__ import annotations

import dataclasses
import os

import pytest

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.engine.prepare import scan, source_specs


@pytest.mark.parametrize("parts", [None, "runs", "steps"])
def test_the_files_recorded_are_the_scanned_entries(tmp_path, parts):
    one = make_tree(tmp_path / "one", seed=3, files=12, max_size=1000)
    two = make_tree(tmp_path / "two", seed=4, files=9, max_size=1000)
    (one / "link").symlink_to("elsewhere")
    os.link(one / "file0.bin", one / "again")
    os.setxattr(two, "user.colour", b"blue")  # a directory's: read by the scan
    entries = scan(source_specs([str(one), str(two)]), [])
    n = len(entries)
    set_id = "ab" * 16
    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["x"])
        if parts is None:
            cat.add_entries(set_id, entries)
        elif parts == "steps":  # every other row, then the rest
            cat.add_entries(set_id, entries, range(0, n, 2))
            cat.add_entries(set_id, entries, range(1, n, 2))
        else:  # runs of 7 rows, the last past the end
            for start in range(0, n, 7):
                cat.add_entries(set_id, entries, range(start, start + 7))
        got = {f.file_id: f.entry for f in cat.files(set_id)}
    want = {i: dataclasses.replace(entries.entry(i), source="") for i in range(n)}
    assert got == want
    kinds = {str(e.kind) for e in got.values()}
    assert {"file", "dir", "symlink", "hardlink"} <= kinds
    assert any(e.meta for e in got.values())
