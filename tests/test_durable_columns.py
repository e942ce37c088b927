"""A mover's durable records travel to the controller as columns (``Durable.of``: an
array of 64-bit ints per int field, tuples for the volumes and checksums) and go into
the catalog as columns (``Catalog.add_record_columns``), with no tuple per record on the
controller's side. Whatever rows a mover made, pickled as a message between processes
or hosts, are the rows the catalog gives back."""

from __future__ import annotations

import pickle
import tempfile
from array import array
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.catalog import Catalog
from parbackup.engine.messages import Durable

SET = "ab" * 16
LABEL = "cd" * 16
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


def _column(values: st.SearchStrategy) -> st.SearchStrategy:
    """Values of one field: often one value in every row (a literal of the statement),
    else a few or any."""
    return st.one_of(values.map(lambda v: [v]), st.lists(values, min_size=1, max_size=3), values)


@st.composite
def _rows(draw: st.DrawFn) -> list[tuple]:
    n = draw(st.sampled_from([0, 1, 63, 64, 300]))
    fields = [
        st.integers(0, (1 << 63) - 1),  # file id
        st.sampled_from(["v", "sets/x/it's-0001.pbv", "v2"]),  # volume
        INT64,  # position
        st.integers(0, 1 << 20),  # header size
        INT64,  # offset
        INT64,  # size
        st.binary(min_size=32, max_size=32),  # checksum
        INT64,  # stored
    ]
    columns = []
    for strategy in fields:
        pick = draw(_column(strategy))
        if isinstance(pick, list):
            columns.append([draw(st.sampled_from(pick)) for _ in range(n)])
        else:
            columns.append([draw(strategy) for _ in range(n)])
    return list(zip(*columns, strict=True))


@settings(max_examples=40, deadline=None)
@given(rows=_rows())
def test_rows_in_are_the_rows_stored(rows: list[tuple]) -> None:
    msg = pickle.loads(pickle.dumps(Durable.of(9, rows), protocol=pickle.HIGHEST_PROTOCOL))
    assert msg.upto == 9 and msg.rows() == rows
    assert list(msg.sizes) == [r[5] for r in rows]
    assert all(type(c) is array for i, c in enumerate(msg.columns) if i not in (1, 6))
    with tempfile.TemporaryDirectory() as tmp, Catalog(str(Path(tmp) / "c.sqlite")) as cat:
        cat.begin_set(SET, strategy="fill", order="desc", threshold=0, sources=["/s"])
        cat.add_record_columns(SET, LABEL, msg.columns)
        got = cat.db.execute(
            "SELECT r.file_id, v.name, r.position, r.header_size, r.offset, r.size, r.checksum,"
            " r.stored FROM records r JOIN volumes v ON v.num = r.vol"
            " WHERE r.set_id=? AND v.label=? ORDER BY r.rowid",
            (SET, LABEL),
        ).fetchall()
        assert got == rows
        kinds = "SELECT DISTINCT typeof(position), typeof(checksum), typeof(stored) FROM records"
        assert cat.db.execute(kinds).fetchall() in ([], [("integer", "blob", "integer")])
