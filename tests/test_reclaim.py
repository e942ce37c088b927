"""Killed and resumed backups leave no garbage that prune cannot reclaim.

Each run is killed at a known byte offset (the faulty device's pause, signalled through
a FIFO), after it made files durable; the next run resumes it. Volumes of dead runs that
later sets still partly read are compacted (write new, switch the catalog, delete the
old); whole dead volumes and empty set directories are deleted.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from killpoints import (
    change_a_file_held_whole,
    device_garbage,
    device_usage,
    killed_run,
    volumes_on,
)
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import FRAMING_SLACK

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


def test_prune_leaves_only_what_live_sets_need_after_killed_resumed_runs(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=77, files=160, max_size=200_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    for n in range(4):  # each run pauses (and is killed) 2 MiB into what is left
        assert killed_run(tmp_path, n, cat, tree, devs, "2MiB"), f"run {n} ended unpaused"
        # each run cleaned up before it wrote: only the run itself and the one it
        # resumed (both alive while it runs) may hold bytes nobody needs
        assert device_garbage(devs, cat) == {}, n
    with Catalog(cat) as catalog:
        resumed = [s.resumed for s in catalog.sets()]
    # each run resumed the one before (killed_run kills only once the catalog holds
    # checkpoints of every device: a run killed before its first one reached the catalog
    # would leave nothing to resume, and its successor would start afresh)
    assert resumed[0] == "" and all(resumed[1:]) and len(resumed) == 4, resumed
    # a file the last run holds whole next to others, changed: that volume is partly
    # live once the set is complete, whatever tails the kills left (they may be short)
    change_a_file_held_whole(cat, tree)
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "complete" and r.json["reused"] > 0
    garbage = device_garbage(devs, cat)
    assert garbage, "the last killed run's unused tail is garbage once the set is complete"
    before = device_usage(devs)
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["compacted"], r.json  # the last run's volumes were partly read
    assert r.json["reclaimed_bytes"] == sum(garbage.values()) == before - device_usage(devs)
    assert device_garbage(devs, cat) == {}
    # what stays is exactly what the complete set reads, plus each volume's framing
    with Catalog(cat) as catalog:
        (done,) = [s for s in catalog.sets() if s.status == "complete"]
        live = {
            (ref.label, ref.volume, ref.position): ref.header_size + ref.size
            for _, ref in catalog.records(done.id)
        }
    frames = device_usage(devs) - sum(live.values())
    assert 0 < frames <= len(volumes_on(devs)) * FRAMING_SLACK, frames
    # no empty set directories are left behind
    for d in devs:
        for sub in (d / "sets").iterdir():
            assert any(sub.iterdir()), sub
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    # the catalog copy on a device was refreshed: it names the compacted volumes
    for d in devs:
        copy = tmp_path / f"copy-{d.name}.sqlite"
        shutil.copyfile(d / "catalog" / "catalog.sqlite", copy)
        out = tmp_path / f"out-{d.name}"
        r = run_cli("restore", "--target", str(out), "--catalog", str(copy))
        assert r.code == 0, r.err
        assert snapshot(restored_root(out, tree)) == snapshot(tree)
