"""Work items sent as columns (engine/messages.py ``Work``): after pickling, the mover
gets back exactly the tuples the dispatcher used to send one by one, for every field
that can be unusual (roots, links, extended attributes, wide and negative values,
parts of a split file)."""

from __future__ import annotations

import pickle
from array import array
from types import SimpleNamespace

from parbackup.engine.dispatch import Dispatcher
from parbackup.engine.messages import Work
from parbackup.engine.workqueue import Sent, Uniform
from parbackup.entries import FILE, KIND_INDEX, Entries


def entries() -> Entries:
    e = Entries()
    e.set_root(1, b"/mnt/other/")
    e.append(b"a/one", FILE, 10, 0o100644, 1000, 1000, 1_700_000_000_000_000_000, 5, 7, 2)
    e.append(b"a/link", KIND_INDEX["symlink"], 0, 0o120777, 0, 0, -5, 0, 8, 2, 0, b"one")
    e.append(b"b/two", FILE, 1 << 40, 0o100600, 1 << 20, 70_000, 1, 2, (1 << 63) - 1, 3, 1)
    e.append(b"b/three", FILE, 0, 0o100600, 0, 0, 0, 0, 9, 4, 1)
    e.set_meta(2, b"xattrs payload")
    return e


def old_items(e: Entries, first: int, batch: list[tuple[int, int, int]]) -> list[tuple]:
    """The tuples as the dispatcher built them before (session 11), one per item."""
    blob, at, roots, links = e.blobs()
    return [
        (seq, f, o, n, e.kind[f], e.size[f], e.mode[f], e.uid[f], e.gid[f], e.mtime_ns[f],
         e.ctime_ns[f], e.ino[f], e.dev[f], e.source[f],
         roots.get(e.source[f], b"") + blob[at[f] : at[f + 1]], links.get(f, b""), None,
         e.meta_bytes(f) if o == 0 else b"")
        for seq, (f, o, n) in enumerate(batch, first)
    ]  # fmt: skip


def work(e: Entries, dev: SimpleNamespace, batch: list[tuple[int, int, int]]) -> Work:
    """``Dispatcher.work_items`` of ``batch`` given as its three columns."""
    here = SimpleNamespace(entries=e, feed=None, uniform=Uniform())
    cols = tuple(array("q", c) for c in zip(*batch, strict=True))
    return Dispatcher.work_items(here, dev, cols)  # type: ignore[arg-type]


def test_columns_give_back_every_item_as_it_was() -> None:
    e = entries()
    batch = [(2, 0, 1 << 30), (0, 0, 10), (1, 0, 0), (2, 1 << 30, 1 << 30), (3, 0, 0)]
    dev = SimpleNamespace(sent=Sent())
    dev.sent.add_columns([9], [0], [1])  # the batch's first item is the device's second
    got_work = work(e, dev, batch)
    got = list(pickle.loads(pickle.dumps(got_work)).items())
    assert got == old_items(e, 2, batch)
    assert [type(v) for v in got[2]] == [type(v) for v in old_items(e, 2, batch)[2]]
    assert len(got_work) == len(batch) and dev.sent.next_seq == 2 + len(batch)


def test_a_tree_without_links_or_attributes_sends_no_lists() -> None:
    e = Entries()
    for k in range(3):
        e.append(b"f%d" % k, FILE, k, 0o100644, 0, 0, k)
    dev = SimpleNamespace(sent=Sent())
    got = work(e, dev, [(1, 0, 1), (2, 0, 2)])
    assert got.links is None and got.metas is None and got.data is None
    assert list(got.items()) == old_items(e, 1, [(1, 0, 1), (2, 0, 2)])


def test_a_batch_of_one_item() -> None:
    e = entries()
    dev = SimpleNamespace(sent=Sent())
    got = work(e, dev, [(2, 5, 7)])
    assert list(pickle.loads(pickle.dumps(got)).items()) == old_items(e, 1, [(2, 5, 7)])


def test_one_owner_device_and_source_are_repeated_until_a_row_differs() -> None:
    """uid, gid, dev and source that every row shares are sent as that value repeated
    (``Uniform``, found once per column); a row appended later with other values is seen
    at the next batch, a column widened to 4 bytes (a new array) too."""
    e = Entries()
    for k in range(4):
        e.append(b"f%d" % k, FILE, k + 1, 0o100644, 7, 8, k, 0, 10 + k, 3, 0)
    here = SimpleNamespace(entries=e, feed=None, uniform=Uniform())
    dev = SimpleNamespace(sent=Sent())

    def send(batch: list[tuple[int, int, int]]) -> tuple[list[tuple], list[tuple]]:
        cols = tuple(array("q", c) for c in zip(*batch, strict=True))
        want = old_items(e, dev.sent.next_seq, batch)
        got = Dispatcher.work_items(here, dev, cols)  # type: ignore[arg-type]
        for name, at in (("uid", 6), ("gid", 7), ("dev", 11), ("source", 12)):
            assert got.columns[at].typecode == getattr(e, name).typecode
        return list(pickle.loads(pickle.dumps(got)).items()), want

    got, want = send([(2, 0, 3), (0, 0, 1)])
    assert got == want and {r[7] for r in got} == {7} and {r[12] for r in got} == {3}
    e.append(b"g", FILE, 5, 0o100644, 70_000, 9, 1, 0, 20, 4, 1)  # uid widened, new dev
    got, want = send([(4, 0, 5), (1, 0, 2)])
    assert got == want
    assert [(r[7], r[8], r[12], r[13]) for r in got] == [(70_000, 9, 4, 1), (7, 8, 3, 0)]
