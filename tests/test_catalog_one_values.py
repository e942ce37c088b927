"""A batch's one-valued columns go into the catalog as literals of the statement, not
as values bound per row (catalog/schema.py ``one_valued``, issue 10), and every row
reads back as it was given: blobs with quotes and NULs, negative and 64-bit ints, a
column one-valued in one batch and not in the next, 1 beside True or 1.0, on SQLite and
PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parbackup.catalog import open_catalog
from parbackup.catalog.schema import ONE_VALUE_ROWS, insert_rows, one_valued
from parbackup.engine.prepare import scan, source_specs

N = ONE_VALUE_ROWS + 6
ODD = b"it's \x00 a 'blob'\x00"
BIG, SMALL = (1 << 63) - 1, -(1 << 63)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def target(request, tmp_path) -> str:
    """Where a new catalog goes: a SQLite path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "cat.sqlite")
    return request.getfixturevalue("pg_url")


class Binds:
    """A SQLite connection that counts the values bound per row of its INSERTs (the
    real connection does the work)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.per_row = db, []

    def execute(self, sql: str, params=()):
        if sql.startswith("INSERT INTO files") or sql.startswith("INSERT INTO records ("):
            self.per_row.append(len(params) // (sql.count("), (") + 1))  # values a row
        return self.db.execute(sql, params)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def _table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE t (k, a, b, c, d)")  # no affinity: typeof shows what went in


def _back(db: sqlite3.Connection) -> list[tuple]:
    return db.execute("SELECT k, a, typeof(a), b, typeof(b), c, typeof(c), d, typeof(d)"
                      " FROM t ORDER BY k").fetchall()  # fmt: skip


def _put(db: sqlite3.Connection, columns: dict[str, list]) -> None:
    insert_rows(db, *one_valued("t", {}, columns))


def test_one_valued_columns_are_literals_and_read_back_as_given():
    columns = {
        "k": list(range(N)),
        "a": [ODD] * N,
        "b": [SMALL] * N,
        "c": [BIG] * N,
        "d": [b"x" * (i % 3) for i in range(N)],
    }
    head, ncols, rows, fixed = one_valued("t", {}, columns)
    assert (head, ncols, fixed) == ("INSERT INTO t (a, b, c, k, d)", 2, (ODD, SMALL, BIG))
    db = sqlite3.connect(":memory:")
    _table(db)
    insert_rows(db, head, ncols, rows, fixed)
    want = [(i, ODD, "blob", SMALL, "integer", BIG, "integer", b"x" * (i % 3), "blob")
            for i in range(N)]  # fmt: skip
    assert _back(db) == want


def test_text_floats_bools_long_bytes_and_ints_past_64_bits_are_bound_as_they_are():
    columns = {
        "k": list(range(N)),
        "a": ["text"] * N,  # rows' text is never a literal
        "b": [1 << 63] * N,  # no 64-bit int: binding it fails, as before
        "c": [1] * (N - 2) + [True, 1.0],  # equal, but not one value
        "d": [1.5] * N,
        "e": [b"x" * 65] * N,  # long bytes: not written into each row of a statement
    }
    assert one_valued("t", {}, columns)[1] == 6
    assert one_valued("t", {}, {k: v for k, v in columns.items() if k != "b"})[1] == 5
    few = {"k": list(range(ONE_VALUE_ROWS - 1)), "a": [b"x"] * (ONE_VALUE_ROWS - 1)}
    assert one_valued("t", {}, few)[1] == 2  # a small batch is bound whole


def _values():
    return st.one_of(
        st.sampled_from([0, 1, -1, BIG, SMALL, True, 1.0, b"", ODD, b"'", "t", None]),
        st.integers(SMALL, BIG),
        st.binary(max_size=6),
    )


@st.composite
def _batches(draw):
    """Batches of 0..2*N rows whose columns are one value (an int, bytes, text, ...),
    or mostly one value with a few others, or anything."""
    n = draw(st.integers(0, 2 * N))
    columns = {"k": list(range(n))}
    for name in "abcd":
        v = draw(_values())
        shape = draw(st.sampled_from(["one", "almost", "any"]))
        if shape == "one":
            col = [v] * n
        elif shape == "almost":
            col = [v] * n
            for i in draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=3)) if n else []:
                col[i] = draw(_values())
        else:
            col = draw(st.lists(_values(), min_size=n, max_size=n))
        columns[name] = col
    return columns


@given(st.lists(_batches(), min_size=1, max_size=3))
def test_batches_read_back_as_plain_binds_store_them(batches):
    """Property: whatever the batches, the rows stored are those ``executemany`` stores."""
    ours, plain = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    _table(ours)
    _table(plain)
    at = 0
    for columns in batches:
        columns["k"] = [at + k for k in columns["k"]]
        at += len(columns["k"])
        _put(ours, columns)
        rows = zip(*columns.values(), strict=True)
        plain.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    assert _back(ours) == _back(plain)


def _mover_rows(first_fid: int, volume: str, n: int, varying: bool) -> list[tuple]:
    """A mover's record rows: one volume, header size, offset and stored value in every
    row, or (``varying``) two volumes and varying headers."""
    return [
        (first_fid + i, volume + str(i % 2) if varying else volume, 4096 + 700 * i,
         100 + i if varying else 120, 0, 500 + i, ODD + bytes([i % 256]) * 3,
         -1 if not varying else i - 1)
        for i in range(n)
    ]  # fmt: skip


def test_a_movers_records_are_bound_by_four_values_a_row_and_read_back(target):
    set_id = "ab" * 16
    one = _mover_rows(0, "sets/x/la-0001.pbv", N, varying=False)
    two = _mover_rows(N, "sets/x/la-000", N, varying=True)  # the next: none one-valued
    with open_catalog(target) as cat:
        cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["x"])
        binds = None  # PostgreSQL loads by COPY: no binds to count
        if isinstance(cat.db, sqlite3.Connection):
            cat.db = binds = Binds(cat.db)
        cat.add_record_rows(set_id, "la", one)
        cat.add_record_rows(set_id, "la", two)
        got = sorted(cat.record_rows(set_id))
    if binds is not None:
        assert binds.per_row == [4, 7]  # file id, position, size, checksum
    want = sorted(("la", f, v, p, h, o, s, c, "", -1, st) for f, v, p, h, o, s, c, st in one + two)
    assert got == want


def _tree(root) -> None:
    """N files of one mode and owner, then a symlink and a file of another mode."""
    os.mkdir(root)
    for i in range(N):
        with open(root / f"f{i:03d}", "wb") as f:
            f.write(b"x" * i)
        os.chmod(root / f"f{i:03d}", 0o640)
        os.utime(root / f"f{i:03d}", ns=(i, i + 1))
    (root / "zz-link").symlink_to("f000")
    (root / "zz-other").write_bytes(b"other")
    os.chmod(root / "zz-other", 0o600)


def test_files_one_valued_in_one_batch_and_not_the_next_read_back(tmp_path, target):
    _tree(tmp_path / "src")
    entries = scan(source_specs([str(tmp_path / "src")]), [])
    kinds = [str(entries.entry(i).kind) for i in range(len(entries))]
    first = kinds.index("file")  # the files in a row: kind, mode, owner, link one value
    assert kinds[first : first + N] == ["file"] * N
    rest = [i for i in range(len(entries)) if not first <= i < first + N]
    one_ctime = len(set(entries.ctime_ns[first : first + N])) == 1
    set_id = "cd" * 16
    with open_catalog(target) as cat:
        cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["x"])
        binds = None  # PostgreSQL loads by COPY: no binds to count
        if isinstance(cat.db, sqlite3.Connection):
            cat.db = binds = Binds(cat.db)
        cat.add_entries(set_id, entries, range(first, first + N))
        for i in rest:  # each alone, as an incremental's few
            cat.add_entries(set_id, entries, range(i, i + 1))
        cat.add_entries(set_id, entries, range(0, len(entries), 1)[:0])
        got = {f.file_id: f.entry for f in cat.files(set_id)}
    if binds is not None:  # file id, path, size, mtime, inode and ctime (unless the
        assert binds.per_row[0] == 6 - one_ctime  # clock's tick made it one value)
        assert set(binds.per_row[1:]) == {11}
    want = {i: dataclasses.replace(entries.entry(i), source="") for i in range(len(entries))}
    assert got == want
    assert {"file", "dir", "symlink"} <= {str(e.kind) for e in got.values()}
