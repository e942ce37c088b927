"""A batch's paths as ``Entries.joined_paths`` gives them to ``messages.Work``: rows of
one source are sliced from the blob and joined with their root between them (the fast
path of a million small files), and that must be what adding each row's root to its
path gives (the general path, rows of several sources), for any rows in any order:
runs of consecutive rows or not, repeated rows (a split file's parts), sources with a
root, with an empty one or with none, and through ``Dispatcher.work_items`` and pickling
to the items a mover takes.
"""

from __future__ import annotations

import pickle
from array import array
from itertools import accumulate
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.engine.dispatch import Dispatcher
from parbackup.engine.workqueue import Sent, Uniform
from parbackup.entries import FILE, Entries, one_root


def general(e: Entries, rows: list[int]) -> tuple[bytes, array]:
    """Each row's root added to its path, one by one (the code before session 21)."""
    blob, at, roots, _links = e.blobs()
    names = [roots.get(e.source[f], b"") + blob[at[f] : at[f + 1]] for f in rows]
    return b"".join(names), array("q", accumulate(map(len, names), initial=0))


def table(names: list[bytes], sources: list[int], roots: dict[int, bytes]) -> Entries:
    e = Entries()
    for s, root in roots.items():
        e.set_root(s, root)
    for k, (name, s) in enumerate(zip(names, sources, strict=True)):
        e.append(name, FILE, k, 0o100644, 0, 0, k, 0, k, 1, s)
    return e


name_st = st.binary(min_size=0, max_size=12)
root_st = st.sampled_from([b"", b"/", b"/mnt/src/", b"\xff/odd root/"])


@st.composite
def tables_and_batches(draw):
    n = draw(st.integers(1, 40))
    several = draw(st.booleans())
    sources = [draw(st.integers(0, 2)) if several else 0 for _ in range(n)]
    roots = draw(st.dictionaries(st.integers(0, 2), root_st, max_size=3))
    names = draw(st.lists(name_st, min_size=n, max_size=n))
    if draw(st.booleans()):  # consecutive rows: a run of the table
        start = draw(st.integers(0, n - 1))
        rows = list(range(start, draw(st.integers(start, n))))
    else:
        rows = draw(st.lists(st.integers(0, n - 1), max_size=30))
    return table(names, sources, roots), rows


@given(case=tables_and_batches())
@settings(max_examples=400, deadline=None)
def test_joined_paths_are_each_row_added_to_its_root(case) -> None:
    e, rows = case
    sources = array("H", [e.source[f] for f in rows])
    paths, path_at = e.joined_paths(array("q", rows), sources)
    want = general(e, rows)
    assert (paths, path_at) == want
    assert type(paths) is bytes and path_at.typecode == "q"
    assert [paths[path_at[i] : path_at[i + 1]] for i in range(len(rows))] == [
        e.path_bytes(f) for f in rows
    ]


@given(case=tables_and_batches())
@settings(max_examples=200, deadline=None)
def test_work_items_carry_each_rows_path(case) -> None:
    """Through the dispatcher (the source column as ``Uniform`` gives it: one value
    repeated when the whole table has one source) and pickling, as a mover gets them."""
    e, rows = case
    if not rows:
        return
    here = SimpleNamespace(entries=e, feed=None, uniform=Uniform())
    dev = SimpleNamespace(sent=Sent())
    cols = (array("q", rows), array("q", [0] * len(rows)), array("q", [1] * len(rows)))
    work = Dispatcher.work_items(here, dev, cols)  # type: ignore[arg-type]
    items = list(pickle.loads(pickle.dumps(work)).items())
    assert [item[14] for item in items] == [e.path_bytes(f) for f in rows]
    assert (work.paths, work.path_at) == general(e, rows)


def test_one_root_is_none_only_for_rows_of_several_sources() -> None:
    roots = {1: b"/r/"}
    assert one_root(array("H"), roots) == b""
    assert one_root(array("H", [1, 1]), roots) == b"/r/"
    assert one_root(array("H", [0, 0]), roots) == b""  # a source without a root
    assert one_root(array("H", [1, 0]), roots) is None
    assert one_root(array("H", [0, 0]), {}) == b""
