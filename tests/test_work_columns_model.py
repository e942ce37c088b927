"""The work queue's columns and one-value columns, checked against simple models.

``WorkQueue.take_columns`` (runs gathered by ``itemgetter``) against the one-at-a-time
rule while the queue is also cut from the end (``take_back``), extended between takes
(rows as a range, an array or a list, several chunks sharing one plan's columns) and
drained; ``Uniform`` (uid, gid, dev and source sent as one repeated value) against the
per-item tuples while the table grows between batches, is widened, joined by a split
scan's part and has rows turned into hard links; ``encode_record_header`` (by table)
against session 15's code, byte for byte, for every record code and version.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from array import array
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup import format as fmt
from parbackup.engine.dispatch import Dispatcher
from parbackup.engine.workqueue import Sent, Uniform, WorkQueue, rows_of
from parbackup.entries import FILE, Entries
from parbackup.model import Piece
from test_work_columns import old_items
from test_workqueue import reference_take

# -- WorkQueue ---------------------------------------------------------------------------


def model_take_back(model: list[list[int]], nbytes: int, min_cut: int) -> list[Piece]:
    """Whole items from the end, then the last one's tail cut (not under ``min_cut``)."""
    out: list[Piece] = []
    while model and nbytes > 0:
        fid, off, sz = model[-1]
        if sz <= nbytes:
            out.append(Piece(fid, off, sz))
            nbytes -= sz
            model.pop()
            continue
        if nbytes >= min_cut:
            model[-1][2] = sz - nbytes
            out.append(Piece(fid, off + sz - nbytes, nbytes))
        break
    return out


sizes_st = st.lists(st.integers(0, 500), min_size=0, max_size=25)
op_st = st.one_of(
    st.tuples(st.just("extend"), sizes_st, st.sampled_from(["range", "array", "list"])),
    st.tuples(st.just("take"), st.integers(1, 30), st.integers(0, 1200), st.integers(1, 400)),
    st.tuples(st.just("back"), st.integers(0, 800), st.integers(0, 200)),
)


@given(ops=st.lists(op_st, min_size=1, max_size=40), share=st.booleans())
@settings(max_examples=400, deadline=None)
def test_take_columns_is_the_one_at_a_time_rule_among_cuts_and_extends(ops, share) -> None:
    q = WorkQueue()
    model: list[list[int]] = []
    plan = (array("q"), array("q"), array("q"))  # one plan's columns, chunks' rows in it
    next_fid = 0
    for op in ops:
        if op[0] == "extend":
            _, sizes, how = op
            fids = list(range(next_fid, next_fid + len(sizes)))
            next_fid += len(sizes)
            offs = [3 * f for f in fids]
            if share:  # rows of columns shared with earlier chunks
                base = len(plan[0])
                for col, vals in zip(plan, (fids, offs, sizes), strict=True):
                    col.extend(vals)
                order = list(reversed(range(base, base + len(sizes))))
                cols = plan
            else:
                order = list(range(len(sizes)))
                cols = (array("q", fids), array("q", offs), array("q", sizes))
            rows = {"range": None, "array": array("I", order), "list": order}[how]
            if rows is None and share:
                rows = range(len(plan[0]) - len(sizes), len(plan[0]))
                order = list(rows)
            q.extend(*cols, rows)
            model += [[cols[0][r], cols[1][r], cols[2][r]] for r in order]
        elif op[0] == "take":
            _, max_items, max_bytes, split = op
            want = reference_take(model, max_items, max_bytes, split)
            got = q.take_columns(max_items, max_bytes, split)
            assert [c.typecode for c in got] == ["q", "q", "q"]
            assert list(zip(*got, strict=True)) == want
        else:
            _, nbytes, min_cut = op
            assert q.take_back(nbytes, min_cut) == model_take_back(model, nbytes, min_cut)
        assert q.bytes == sum(s for _f, _o, s in model)
        assert len(q) == len(model)
    assert q.drain() == [Piece(*item) for item in model]
    assert q.take_columns(5, 100, 10) == (array("q"), array("q"), array("q"))


def test_take_columns_of_a_first_item_larger_than_split_and_max_bytes() -> None:
    q = WorkQueue()
    q.extend([0, 1, 2], [0, 0, 0], [1000, 5, 5])
    assert q.take(10, 1, 300) == [(0, 0, 300)]  # the first part goes even past max_bytes
    assert q.take(10, 600, 300) == [(0, 300, 300), (0, 600, 300)]
    assert q.take(2, 200, 300) == [(0, 900, 100), (1, 0, 5)]
    assert q.take(10, 0, 300) == [(2, 0, 5)]
    assert len(q) == 0 and q.bytes == 0 and not q.chunks


# -- Uniform -----------------------------------------------------------------------------

row_st = st.tuples(
    st.sampled_from([7, 7, 7, 70_000]),  # uid: past 65535 widens the column
    st.sampled_from([8, 8, 9]),  # gid
    st.sampled_from([3, 3, 1 << 33]),  # dev: past 4 bytes widens it
    st.sampled_from([0, 0, 1]),  # source
)
entries_op = st.one_of(
    st.tuples(st.just("rows"), st.lists(row_st, min_size=1, max_size=6)),
    st.tuples(st.just("table"), st.lists(row_st, min_size=1, max_size=4)),
    st.tuples(st.just("link"), st.integers(0, 1000)),
    st.tuples(st.just("send"), st.lists(st.integers(0, 1000), min_size=1, max_size=8)),
)


def add_rows(e: Entries, rows: list[tuple[int, int, int, int]], source: int | None) -> None:
    n = len(e)
    made = [
        (b"f%d" % (n + k), FILE, k + 1, 0o100644, uid, gid, k, 0, n + k, dev,
         src if source is None else source, b"")
        for k, (uid, gid, dev, src) in enumerate(rows)
    ]  # fmt: skip
    if source is None:
        e.extend_rows(made)
        return
    part = Entries()  # a split scan's part, joined column by column
    part.extend_rows(made)
    e.extend_table(part, source)


@given(ops=st.lists(entries_op, min_size=1, max_size=25))
@settings(max_examples=300, deadline=None)
def test_uniform_columns_are_what_gathering_each_row_gives(ops) -> None:
    """Whatever the table did between two batches (rows appended one way or another,
    a column widened to a new array, rows made hard links), each batch's items are the
    tuples the dispatcher built one by one before session 16."""
    e = Entries()
    add_rows(e, [(7, 8, 3, 0)], None)
    here = SimpleNamespace(entries=e, feed=None, uniform=Uniform())
    dev = SimpleNamespace(sent=Sent())
    for op in ops:
        if op[0] == "rows":
            add_rows(e, op[1], None)
        elif op[0] == "table":
            add_rows(e, op[1], op[1][0][3])
        elif op[0] == "link":
            e.make_hardlink(op[1] % len(e), b"f0")
        else:
            batch = [(f % len(e), 0, e.size[f % len(e)]) for f in op[1]]
            want = old_items(e, dev.sent.next_seq, batch)
            cols = tuple(array("q", c) for c in zip(*batch, strict=True))
            got = Dispatcher.work_items(here, dev, cols)  # type: ignore[arg-type]
            assert list(pickle.loads(pickle.dumps(got)).items()) == want


# -- record headers ----------------------------------------------------------------------

_OLD_RECORD = struct.Struct("<4sHHI16sQQQQIIIqI32sII")


def old_header(code, set_id, fid, off, size, fsize, mode, uid, gid, mtime, digest, path,
               link, flags=0, stored=-1) -> bytes:  # fmt: skip
    """``encode_record_header`` as session 15 wrote it (b34c486)."""
    extra = b"" if stored < 0 else struct.pack("<Q", stored)
    body = _OLD_RECORD.pack(
        b"PBKR", fmt.record_version(code) if stored < 0 else fmt.STORED_VERSION, code,
        _OLD_RECORD.size + len(extra) + len(path) + len(link) + 4, set_id, fid, off, size,
        fsize, mode, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, mtime, flags, digest, len(path),
        len(link),
    )  # fmt: skip
    body += extra + path + link
    return body + struct.pack("<I", zlib.crc32(body))


u64 = st.integers(0, (1 << 64) - 1)


@given(
    code=st.integers(0, fmt.KIND_END),
    fields=st.tuples(
        st.binary(min_size=16, max_size=16),
        u64,
        u64,
        u64,
        u64,
        st.integers(0, (1 << 32) - 1),
        st.integers(-(1 << 32), (1 << 32) - 1),
        st.integers(-(1 << 32), (1 << 32) - 1),
        st.integers(-(1 << 63), (1 << 63) - 1),
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=300),
        st.binary(max_size=300),
    ),
    flags=st.integers(0, (1 << 32) - 1),
    stored=st.one_of(st.just(-1), u64),
)
@settings(max_examples=500, deadline=None)
def test_record_headers_are_session_15s_bytes(code, fields, flags, stored) -> None:
    got = fmt.encode_record_header(code, *fields, flags=flags, stored=stored)
    assert got == old_header(code, *fields, flags=flags, stored=stored)


def test_uniform_tells_another_array_of_the_same_length_from_the_one_it_saw() -> None:
    """A table replaced by another of as many rows (another run's, a copy) is looked at
    anew: the cache holds the array it saw, so no other array can pass for it."""
    same = Uniform()

    get = rows_of([0, 2])
    assert same.column("uid", array("H", [5, 5, 5]), get, 2) == array("H", [5, 5])
    assert same.column("uid", array("H", [5, 6, 7]), get, 2) == array("H", [5, 7])
    assert same.column("uid", array("I", [9, 9, 9]), get, 2) == array("I", [9, 9])
