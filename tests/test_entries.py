"""The columnar tables of a million files stay small and exact (issue 10): the entries'
size, inode and device columns take 4 bytes until a value needs 8, the plan's columns
are as narrow as its pieces allow, and no value is ever cut short by that."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup import entries
from parbackup.engine.workqueue import WorkQueue
from parbackup.entries import DIR, FILE, Entries
from parbackup.model import Pieces, Slot, Strategy
from parbackup.plan import plan

GIB = 1 << 30


def row(path: bytes, size: int = 10, ino: int = 5, dev: int = 64769, uid: int = 0) -> tuple:
    return (path, FILE, size, 0o100644, uid, uid, 1, 2, ino, dev, 0, b"")


def test_small_values_take_four_bytes():
    e = Entries()
    e.extend_rows([row(b"/a"), row(b"/b", size=0xFFFFFFFF, ino=0xFFFFFFFF, uid=0xFFFF)])
    assert (e.size.itemsize, e.ino.itemsize, e.dev.itemsize) == (4, 4, 4)
    assert (e.uid.itemsize, e.gid.itemsize) == (2, 2)
    assert e.size[1] == e.ino[1] == 0xFFFFFFFF
    assert e.uid[1] == e.gid[1] == 0xFFFF


@given(
    st.lists(
        st.tuples(
            st.integers(0, 1 << 62),
            st.integers(0, (1 << 64) - 1),
            st.integers(0, (1 << 64) - 1),
            st.integers(0, (1 << 32) - 1),
        ),
        min_size=1,
        max_size=20,
    ),
    st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_a_large_value_widens_its_column_and_keeps_every_row(values, one_by_one):
    e = Entries()
    e.append(b"/", DIR, 0, 0o40755, 0, 0, 1)
    rows = [row(b"/f%d" % k, *v) for k, v in enumerate(values)]
    if one_by_one:
        for r in rows:
            e.append(*r)
    else:
        e.extend_rows(rows)
    assert len(e) == len(values) + 1
    got = [(e.size[i], e.ino[i], e.dev[i], e.uid[i]) for i in range(1, len(e))]
    assert got == values
    assert [e.gid[i] for i in range(1, len(e))] == [v[3] for v in values]
    assert [e.path_bytes(i) for i in range(1, len(e))] == [r[0] for r in rows]
    assert e.entry(0).kind.value == "dir"


def test_a_stream_size_past_4_gib_is_kept():
    e = Entries()
    e.extend_rows([row(b"/stdin", size=0)])
    e.set_size(0, 5 * GIB)
    assert e.size[0] == 5 * GIB


def test_a_plan_over_a_file_past_4_gib_keeps_exact_ranges():
    sizes = Entries()
    sizes.extend_rows([row(b"/big", size=9 * GIB + 7), row(b"/small", size=3)])
    pieces = Pieces.whole_files(sizes.size)
    for strategy in Strategy:
        p = plan(pieces, [Slot(room=None), Slot(room=None)], strategy)
        covered = sorted(
            (f, o, s) for f, o, s in zip(p.file, p.offset, p.size, strict=True) if f == 0
        )
        at = 0
        for _f, offset, size in covered:
            assert offset == at
            at += size
        assert at == 9 * GIB + 7, strategy
        # a queue splits an item in place in the plan's columns: the parts add up
        q = WorkQueue()
        q.extend(p.file, p.offset, p.size)
        taken = []
        while len(q):
            taken += q.take(4, 1 << 40, 2 * GIB)
        assert sum(s for f, _o, s in taken if f == 0) == 9 * GIB + 7


def test_plan_columns_are_narrow_for_small_files():
    e = Entries()
    e.extend_rows([row(b"/f%d" % k, size=k) for k in range(1000)])
    p = plan(Pieces.whole_files(e.size), [Slot(room=None)] * 3)
    assert [a.itemsize for a in (p.file, p.offset, p.size, p.device)] == [4, 4, 4, 1]
    per_file = [0] * 1000
    for f, s in zip(p.file, p.size, strict=True):
        per_file[f] += s
    assert per_file == list(range(1000))


@given(st.integers(0, 1 << 62), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1))
@settings(max_examples=40, deadline=None)
def test_columns_of_a_wider_table_join_a_narrow_one(size, ino, uid):
    """A tree scanned in pieces on its host (sources/hostscan.py): a piece whose columns
    widened (a file past 4 GiB, a large inode or owner) joins a table still narrow."""
    piece = Entries()
    piece.extend_rows([row(b"/small"), row(b"/big", size, ino, 7, uid)])
    out = Entries()
    out.extend_rows([row(b"/first")])
    cols = [col[0:2] for col in (piece.kind, piece.size, piece.mode, piece.uid, piece.gid,
                                 piece.mtime_ns, piece.ctime_ns, piece.ino, piece.dev)]  # fmt: skip
    out.extend_columns([b"/small", b"/big"], cols, 0, {})
    assert len(out) == 3
    assert (out.size[2], out.ino[2], out.dev[2], out.uid[2], out.gid[2]) == (size, ino, 7, uid, uid)
    assert [out.path_bytes(i) for i in range(3)] == [b"/first", b"/small", b"/big"]


def test_total_bytes_counts_regular_files_only():
    """The whole table's total (sizes summed apart from the other kinds) equals the
    per-row sum, with other kinds at the start, middle and end; and of ``files``."""
    kinds = [DIR, FILE, DIR, FILE, FILE, DIR, FILE, DIR]
    e = Entries()
    e.extend_rows([(b"/e%d" % i, k, *row(b"", size=10**i)[2:]) for i, k in enumerate(kinds)])
    assert e.total_bytes() == 1011010
    assert e.total_bytes([0, 1, 2, 4, 7]) == 10010
    assert Entries().total_bytes() == 0


def test_names_past_what_four_bytes_tell_widen_the_offsets_before_they_are_stored(monkeypatch):
    """A batch of names that takes the blob past the 4-byte limit widens the name
    offsets before they are stored; checked with the limit lowered to 60 bytes (at the
    real one, 4 GiB of names, a scan's batch of 1024 rows crossing it raised
    OverflowError: seen once with a real 4 GiB blob, too large for a test)."""
    monkeypatch.setattr(entries, "NARROW_NAMES", 60)
    names = [b"/d/%020d" % k for k in range(8)]  # 23 bytes each
    rows = [row(n) for n in names]
    for way in ("append", "extend_rows", "extend_table", "extend_columns"):
        e = Entries()
        e.append(b"/" * 40, DIR, 0, 0o40755, 0, 0, 1)  # 40 bytes of names: still narrow
        assert e._path_at.itemsize == 4
        if way == "append":
            for r in rows:
                e.append(*r)
        elif way == "extend_rows":
            e.extend_rows(rows)
        elif way == "extend_table":
            other = Entries()
            other.extend_rows(rows)
            e.extend_table(other, 0)
        else:  # a host's pieces: kind, size, mode, uid, gid, mtime, ctime, ino, dev
            e.extend_columns(names, [array("q", [r[j] for r in rows]) for j in range(1, 10)], 0, {})
        assert e._path_at.itemsize == 8, way
        assert [e.path_bytes(i) for i in range(1, len(e))] == names, way
