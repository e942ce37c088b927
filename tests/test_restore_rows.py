"""A restore's records straight from the catalog's rows (readback/select.py
``packed_by_label``): the same tuples, in any order (each reader orders its own), as the
readers were given before, when each record was made a ``RecordRef`` and packed
(readback/messages.py ``pack``), for a full set with a file split over devices and for
an incremental set whose reused records name their origin; and ``spans_complete``, the
coverage rule on (offset, size) pairs; and ``index_records``, where a restore finds each
file's records."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from conftest import make_tree, run_cli
from parbackup import Catalog
from parbackup.coverage import complete, spans_complete
from parbackup.model import RecordRef
from parbackup.readback.messages import pack
from parbackup.readback.select import index_records, packed_by_label, records_by_label


@pytest.mark.slow
def test_packed_rows_are_the_packed_records_of_full_and_incremental_sets(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", files=30, big=(8 << 20,))
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("-d", str(d))]
    assert run_cli("backup", str(tree), *args, "--catalog", cat).code == 0
    changed = next(p for p in sorted(tree.rglob("*")) if p.is_file() and p.stat().st_size)
    changed.write_bytes(b"changed since the full backup")
    r = run_cli("backup", str(tree), *args, "--incremental", "--catalog", cat)
    assert r.code == 0, r.err
    with Catalog(cat) as catalog:
        sets = [s.id for s in catalog.sets()]
        assert len(sets) == 2
        origins = 0
        for set_id in sets:
            ids = {f.file_id for f in catalog.files(set_id)}
            before = {label: pack(recs) for label, recs in records_by_label(
                catalog, set_id, ids).items()}  # fmt: skip
            got = packed_by_label(catalog, set_id, ids)
            assert {label: sorted(recs) for label, recs in got.items()} == {
                label: sorted(recs) for label, recs in before.items()
            }
            assert len(got) == 2 and all(got.values())  # both devices hold records
            on = [{rec[0] for rec in recs} for recs in got.values()]
            assert set_id != sets[0] or on[0] & on[1]  # the big file is split over both
            origins += sum(1 for recs in got.values() for rec in recs if rec[7])
            some = set(sorted(ids)[::3])
            part = packed_by_label(catalog, set_id, some)
            assert {rec[0] for recs in part.values() for rec in recs} == {
                rec[0] for recs in before.values() for rec in recs if rec[0] in some
            }
        assert origins  # the incremental set reuses records of the full one


def test_spans_complete_agrees_with_complete() -> None:
    shapes = [(0, 5), (5, 5), (10, 3), (0, 10), (4, 6), (10, 0)]
    for n in range(1, 4):
        for spans in itertools.permutations(shapes, n):
            refs = [RecordRef("l", "v", 0, 1, off, size, b"") for off, size in spans]
            for size in (0, 5, 10, 13, 20):
                assert spans_complete(list(spans), size) == complete(refs, size), (spans, size)
    assert not spans_complete([], 1)
    assert spans_complete([], 0)


def _rec(fid: int, offset: int, size: int) -> tuple:
    """A PackedRef of file ``fid`` holding bytes [offset, offset + size)."""
    return (fid, "v", 0, 1, offset, size, b"", "", -1, -1)


def test_index_records_gives_spans_and_labels_to_every_file_with_several_records() -> None:
    """Files with several records (on one device or over two) get all their spans and
    labels, whatever the order; a file with one record gets that record and its label,
    which a restore judges whole only when it starts at 0 and holds all the file's bytes
    (``spans_complete`` on one span)."""
    records = {
        "A": [_rec(2, 5, 5), _rec(1, 0, 10), _rec(3, 0, 5), _rec(2, 0, 5)],
        "B": [_rec(4, 0, 4), _rec(3, 5, 5), _rec(5, 0, 10)],
        "C": [_rec(5, 0, 10)],  # the same bytes twice: not covered exactly once
    }
    one, on, spans, labels = index_records(records)
    assert {fid: sorted(got) for fid, got in spans.items()} == {
        2: [(0, 5), (5, 5)],
        3: [(0, 5), (5, 5)],
        5: [(0, 10), (0, 10)],
    }
    assert labels == {2: {"A"}, 3: {"A", "B"}, 5: {"B", "C"}}
    assert one[1] == _rec(1, 0, 10) and on[1] == "A"
    assert one[4] == _rec(4, 0, 4) and on[4] == "B"
    assert not spans_complete(spans[5], 10)
    for fid, size in ((1, 10), (4, 10), (4, 4)):  # one record: the restore's own rule
        assert fid not in spans
        rec = one[fid]
        assert (rec[4] == 0 and rec[5] == size) == spans_complete([(rec[4], rec[5])], size)
    assert index_records({}) == ({}, {}, {}, {})
