"""``WorkQueue.take`` takes runs of whole items at once (issue 10: no Python per item of
a million small files); what it hands out, item by item, is what the one-at-a-time rule
gives: list order, at most ``max_items``, bytes up to ``max_bytes`` (the first item
always), an item larger than ``split`` in ``split``-byte parts. ``Sent`` keeps its
unwritten bytes right as items are marked done."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.engine.workqueue import Sent, WorkQueue


def reference_take(
    items: list[list[int]], max_items: int, max_bytes: int, split: int
) -> list[tuple[int, int, int]]:
    """The rule, one item at a time (``items``: [file, offset, size], consumed)."""
    out: list[tuple[int, int, int]] = []
    nbytes = 0
    while items and len(out) < max_items and (nbytes < max_bytes or not out):
        fid, off, sz = items[0]
        if sz > split:
            out.append((fid, off, split))
            items[0] = [fid, off + split, sz - split]
            nbytes += split
            continue
        out.append((fid, off, sz))
        nbytes += sz
        items.pop(0)
    return out


@given(
    sizes=st.lists(st.integers(0, 300), min_size=0, max_size=60),
    chunks=st.integers(1, 4),
    takes=st.lists(
        st.tuples(st.integers(1, 20), st.integers(0, 900), st.integers(1, 400)),
        min_size=1,
        max_size=30,
    ),
)
@settings(max_examples=300, deadline=None)
def test_take_hands_out_what_the_one_at_a_time_rule_does(sizes, chunks, takes):
    q = WorkQueue()
    model: list[list[int]] = []
    per = max(1, len(sizes) // chunks)
    for start in range(0, len(sizes), per):  # several chunks, each a plan's rows
        part = sizes[start : start + per]
        files = array("q", range(start, start + len(part)))
        offsets = array("q", [7 * f for f in files])
        rows = array("I", reversed(range(len(part))))  # rows in any order
        q.extend(files, offsets, array("q", part), rows)
        model += [[files[r], offsets[r], part[r]] for r in rows]
    for max_items, max_bytes, split in takes:
        want = reference_take(model, max_items, max_bytes, split)
        assert q.take(max_items, max_bytes, split) == want
        assert q.bytes == sum(s for _f, _o, s in model)
        assert len(q) == len(model)


@given(sizes=st.lists(st.integers(0, 1000), min_size=1, max_size=50), data=st.data())
@settings(max_examples=200, deadline=None)
def test_sent_counts_the_bytes_not_yet_written(sizes, data):
    sent = Sent()
    sent.add_columns(range(len(sizes)), [0] * len(sizes), sizes)
    done = 0
    for _ in range(5):
        upto = data.draw(st.integers(0, len(sizes)))
        sent.mark_done(upto)
        done = max(done, upto)
        assert sent.undone_bytes == sum(sizes[done:])
        if data.draw(st.booleans()):
            sent.retire(data.draw(st.integers(0, done)))
            assert sent.undone_bytes == sum(sizes[done:])


def test_take_stops_once_max_bytes_are_reached_exactly():
    q = WorkQueue()
    q.extend(array("q", [0, 1, 2, 3]), array("q", [0] * 4), array("q", [10, 10, 10, 0]))
    assert q.take(10, 20, 100) == [(0, 0, 10), (1, 0, 10)]  # 20 bytes taken: no more
    assert q.take(10, 5, 100) == [(2, 0, 10)]  # the first goes even past 5
    assert q.take(10, 5, 100) == [(3, 0, 0)]
    assert len(q) == 0 and q.bytes == 0
