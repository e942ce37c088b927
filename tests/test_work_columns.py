"""Work items sent as columns (engine/messages.py ``Work``): after pickling, the mover
gets back exactly the tuples the dispatcher used to send one by one, for every field
that can be unusual (roots, links, extended attributes, wide and negative values,
parts of a split file)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from parbackup.engine.dispatch import Dispatcher
from parbackup.engine.workqueue import Sent
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


def test_columns_give_back_every_item_as_it_was() -> None:
    e = entries()
    batch = [(2, 0, 1 << 30), (0, 0, 10), (1, 0, 0), (2, 1 << 30, 1 << 30), (3, 0, 0)]
    dev = SimpleNamespace(sent=Sent())
    dev.sent.add_columns([9], [0], [1])  # the batch's first item is the device's second
    here = SimpleNamespace(entries=e, feed=None)
    work = Dispatcher.work_items(here, dev, batch)  # type: ignore[arg-type]
    got = list(pickle.loads(pickle.dumps(work)).items())
    assert got == old_items(e, 2, batch)
    assert [type(v) for v in got[2]] == [type(v) for v in old_items(e, 2, batch)[2]]
    assert len(work) == len(batch) and dev.sent.next_seq == 2 + len(batch)


def test_a_tree_without_links_or_attributes_sends_no_lists() -> None:
    e = Entries()
    for k in range(3):
        e.append(b"f%d" % k, FILE, k, 0o100644, 0, 0, k)
    dev = SimpleNamespace(sent=Sent())
    here = SimpleNamespace(entries=e, feed=None)
    work = Dispatcher.work_items(here, dev, [(1, 0, 1), (2, 0, 2)])  # type: ignore[arg-type]
    assert work.links is None and work.metas is None and work.data is None
    assert list(work.items()) == old_items(e, 1, [(1, 0, 1), (2, 0, 2)])


def test_a_batch_of_one_item() -> None:
    e = entries()
    dev = SimpleNamespace(sent=Sent())
    here = SimpleNamespace(entries=e, feed=None)
    work = Dispatcher.work_items(here, dev, [(2, 5, 7)])  # type: ignore[arg-type]
    assert list(pickle.loads(pickle.dumps(work)).items()) == old_items(e, 1, [(2, 5, 7)])
