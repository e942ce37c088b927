"""catalog/liveness.py: the roots, the live bytes per volume, and what to do per volume.

The pure functions are checked against properties on random catalogs (hypothesis); the
catalog's SQL aggregate (``Catalog.live_use``) against the pure ``volume_use`` on the
same rows in a real SQLite catalog.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oldcatalog import sqlite_to_schema_4
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import (
    FRAMING_SLACK,
    Extent,
    SetNode,
    SetStatus,
    VolumeUse,
    compacted_name,
    forgettable,
    free_tapes,
    pinned,
    plan_device,
    roots,
    running_ids,
    set_of_volume,
    volume_use,
    worth_compacting,
)
from parbackup.catalog.schema import SCHEMA_VERSION
from parbackup.engine.reclaim import read_batches
from parbackup.engine.recovery import resumable_set
from parbackup.model import RecordRef

IDS = [f"{i:032x}" for i in range(6)]
_NUMBERS = itertools.count()
LABELS = ["la", "lb"]


@st.composite
def set_nodes(draw) -> list[SetNode]:
    n = draw(st.integers(1, len(IDS)))
    out = []
    for i in range(n):
        out.append(
            SetNode(
                IDS[i],
                draw(st.sampled_from(list(SetStatus))),
                draw(st.sampled_from(["", *IDS[:i]])),  # a run resumes an earlier set
                frozenset(draw(st.sets(st.sampled_from(LABELS), max_size=1))),
            )
        )
    return out


@given(set_nodes(), st.sets(st.sampled_from(IDS), max_size=2))
def test_roots_are_restorable_running_resumed_by_running_and_kept(sets, keep):
    got = roots(sets, keep)
    known = {s.id for s in sets}
    by_id = {s.id: s for s in sets}
    chain: set[str] = set()  # what running runs resumed, transitively
    for s in sets:
        at = s.resumed if s.status is SetStatus.RUNNING else ""
        while at and at not in chain:
            chain.add(at)
            at = by_id[at].resumed
    for s in sets:
        if s.status in (SetStatus.COMPLETE, SetStatus.DEGRADED, SetStatus.RUNNING):
            assert s.id in got
    assert chain <= got
    for root in got:  # and nothing else
        node = by_id[root]
        assert (
            node.status.restorable
            or node.status is SetStatus.RUNNING
            or root in keep
            or root in chain
        )
    assert got <= known
    # a dead run that resumed another keeps nothing alive
    dead_only = [SetNode(s.id, SetStatus.INTERRUPTED, s.resumed) for s in sets]
    assert roots(dead_only) == frozenset()


extents = st.lists(
    st.builds(
        Extent,
        st.sampled_from(LABELS),
        st.sampled_from([f"sets/{i}/x-0001.pbv" for i in IDS[:3]]),
        st.integers(0, 40).map(lambda p: 100 + 1000 * p),
        st.just(700),
    ),
    max_size=30,
)


@given(set_nodes(), st.sets(st.sampled_from(IDS), max_size=2), st.sets(st.sampled_from(IDS)))
def test_a_running_run_pins_what_it_reads_from(sets, keep, referenced):
    running = running_ids(sets, keep)
    for s in sets:
        if s.status is SetStatus.RUNNING:
            assert s.id in running and (not s.resumed or s.resumed in running)
            assert roots(sets, keep) >= running  # what is pinned for a run is alive
    assert running <= {s.id for s in sets}
    assert (keep & {s.id for s in sets}) <= running
    if not any(s.status is SetStatus.RUNNING for s in sets) and not keep:
        assert running == frozenset()  # nothing runs: nothing is pinned
    assert pinned(running, referenced) == running | referenced


@given(extents)
def test_volume_use_counts_each_record_once(found):
    use = volume_use(found)
    for label, volumes in use.items():
        for volume, u in volumes.items():
            places = {e.position for e in found if (e.label, e.volume) == (label, volume)}
            assert u == VolumeUse(len(places), 700 * len(places))
    assert sum(u.records for v in use.values() for u in v.values()) == len(
        {(e.label, e.volume, e.position) for e in found}
    )


def _catalog_with(path: Path, sets: list[SetNode], rows: dict[str, list[Extent]]) -> Catalog:
    catalog = Catalog(str(path))
    try:
        _fill(catalog, sets, rows)
    except BaseException:
        catalog.close()
        raise
    return catalog


def _fill(catalog: Catalog, sets: list[SetNode], rows: dict[str, list[Extent]]) -> None:
    for s in sets:  # one lock for all: begin_set would mark earlier 'running' sets dead
        catalog.begin_set(s.id, strategy="threshold", order="desc", threshold=0, sources=["/x"])
        catalog.add_records(
            s.id,
            [
                (
                    0,
                    RecordRef(
                        e.label,
                        e.volume,
                        e.position,
                        100,
                        0,
                        e.length - 100,
                        b"c" * 32,
                        "" if set_of_volume(e.volume) == s.id else set_of_volume(e.volume),
                    ),
                )
                for e in rows.get(s.id, [])
            ],
        )
    with catalog.transaction():
        catalog.db.executemany(
            "UPDATE sets SET status=?, resumed=? WHERE id=?",
            [(str(s.status), s.resumed, s.id) for s in sets],
        )
    catalog.run_lock.release()


@pytest.mark.slow
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(set_nodes(), st.data())
def test_catalog_live_use_matches_the_pure_rule(tmp_path, sets, data):
    rows = {s.id: data.draw(extents) for s in sets}
    path = tmp_path / f"c{next(_NUMBERS)}.sqlite"
    with _catalog_with(path, sets, rows) as catalog:
        assert [(n.id, n.status, n.resumed) for n in catalog.set_nodes()] == [
            (s.id, s.status, s.resumed) for s in sets
        ]
        got_roots = catalog.root_ids()
        assert got_roots == roots(sets)
        expected = volume_use(e for s in sets if s.id in got_roots for e in rows[s.id])
        assert catalog.live_use(got_roots) == expected
        in_sets = data.draw(st.sets(st.sampled_from(IDS)))
        expected = volume_use(
            e
            for s in sets
            if s.id in got_roots
            for e in rows[s.id]
            if set_of_volume(e.volume) in in_sets
        )
        assert catalog.live_use(got_roots, in_sets) == expected
        assert catalog.referenced_sets(got_roots) == {
            set_of_volume(e.volume)
            for s in sets
            if s.id in got_roots
            for e in rows[s.id]
            if set_of_volume(e.volume) != s.id
        }


@st.composite
def device_case(draw):
    sets = draw(set_nodes())
    by_id = {s.id: s for s in sets}
    root_ids = roots(sets) | draw(st.sets(st.sampled_from(list(by_id))))  # and pinned ones
    objects, use = [], {}
    for i in range(draw(st.integers(0, 8))):
        owner = draw(st.sampled_from([*by_id, "f" * 32]))  # the last: a foreign set
        name = f"sets/{owner}/la-{i:04d}.pbv"
        size = draw(st.integers(200, 10 << 20))
        objects.append((name, size))
        if draw(st.booleans()):
            live = draw(st.integers(0, size - 100))
            use[name] = VolumeUse(draw(st.integers(1, 50)), live)
    return sets, by_id, root_ids, objects, use


@given(device_case(), st.booleans())
def test_plan_never_touches_what_is_alive(case, sequential):
    _sets, by_id, root_ids, objects, use = case
    plan = plan_device("la", objects, by_id, root_ids, use, sequential=sequential)
    sizes = dict(objects)
    touched = set(plan.delete) | set(plan.compact)
    assert touched | set(plan.keep) | {v for vs in plan.foreign.values() for v in vs} == set(sizes)
    assert not set(plan.delete) & set(plan.compact)
    for name in touched:
        owner = by_id[set_of_volume(name)]
        if owner.id in root_ids:  # only a restorable set's dead volume on a failed device
            assert name in plan.delete and owner.status.restorable
            assert "la" in owner.failed_labels and name not in use
    for name in plan.delete:
        assert name not in use  # nothing live lies in a deleted volume
    for name in plan.compact:
        assert not sequential  # a tape is never compacted
        assert sizes[name] - use[name].live_bytes > FRAMING_SLACK
    for set_id, names in plan.foreign.items():
        assert set_id not in by_id and names
    reclaimed = sum(sizes[n] for n in plan.delete) + sum(
        sizes[n] - use[n].live_bytes for n in plan.compact
    )
    assert plan.garbage == reclaimed


@given(set_nodes(), st.sets(st.sampled_from(IDS)))
def test_forgettable_sets_are_dead_and_unreferenced(sets, referenced):
    root_ids = roots(sets)
    for set_id in forgettable(sets, root_ids, referenced):
        assert set_id not in root_ids and set_id not in referenced


def test_compacted_names_never_collide():
    name = "sets/ab/label-0001.pbv"
    seen = {name}
    for _ in range(3):
        name = compacted_name(name)
        assert name.endswith(".pbv") and set_of_volume(name) == "ab" and name not in seen
        seen.add(name)
    assert name == "sets/ab/label-0001.c3.pbv"


def test_schema_2_catalog_gains_the_resumed_column(tmp_path):
    """A version-2 catalog file (no sets.resumed) opens, migrates, and keeps its sets."""
    path = tmp_path / "v2.sqlite"
    with Catalog(str(path)) as c:
        c.begin_set(IDS[0], strategy="fill", order="asc", threshold=1, sources=["/s"])
    sqlite_to_schema_4(str(path))
    db = sqlite3.connect(path)
    db.execute("DROP INDEX records_by_origin")  # schema 2 had neither
    db.execute("ALTER TABLE sets DROP COLUMN resumed")
    db.execute("UPDATE meta SET value='2' WHERE key='schema'")
    db.commit()
    db.close()
    with Catalog(str(path)) as c:
        assert c.meta("schema") == str(SCHEMA_VERSION) == "5"
        (info,) = c.sets()
        assert (info.id, info.status, info.resumed) == (IDS[0], "running", "")
        c.lock_for_run()
        c.begin_set(
            IDS[1], strategy="fill", order="asc", threshold=1, sources=["/s"], resumed=IDS[0]
        )
        assert [(s.id, s.status, s.resumed) for s in c.sets()] == [
            (IDS[0], "interrupted", ""),
            (IDS[1], "running", IDS[0]),
        ]
        assert c.root_ids() == {IDS[0], IDS[1]}  # the resumed set lives while IDS[1] runs
        names = {r[0] for r in c.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "records_by_origin" in names


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["complete", "interrupted"], 1),  # newer than the newest restorable set: resumed
        (["interrupted", "complete"], None),  # a restorable set is newer: never resumed
        (["interrupted", "degraded"], None),
        (["interrupted", "interrupted"], 1),  # only the newest run
        (["complete", "interrupted", "failed"], 1),  # a failed run holds nothing
        (["complete"], None),
    ],
)
def test_only_a_run_newer_than_the_newest_restorable_set_is_resumed(tmp_path, statuses, expected):
    sets = [SetNode(IDS[i], SetStatus(st)) for i, st in enumerate(statuses)]
    with _catalog_with(tmp_path / "c.sqlite", sets, {}) as catalog:
        assert resumable_set(catalog, ["/x"]) == (None if expected is None else IDS[expected])
        assert resumable_set(catalog, ["/other"]) is None


@given(device_case(), st.floats(0, 100))
def test_max_unused_compacts_exactly_the_volumes_above_the_limit(case, limit):
    _sets, by_id, root_ids, objects, use = case
    every = plan_device("la", objects, by_id, root_ids, use)
    plan = plan_device("la", objects, by_id, root_ids, use, max_unused=limit)
    sizes = dict(objects)
    assert plan.delete == every.delete  # whole dead volumes go whatever the limit
    assert set(plan.compact) <= set(every.compact)
    for name in every.compact:
        unused = sizes[name] - use[name].live_bytes
        assert (name in plan.compact) == (unused / sizes[name] * 100 > limit), name
        assert plan.dropped.get(name, unused) == unused
    assert set(plan.keep) == set(every.keep) | (set(every.compact) - set(plan.compact))
    assert plan_device("la", objects, by_id, root_ids, use, max_unused=100).compact == []


def test_worth_compacting_needs_both_the_slack_and_the_share():
    assert worth_compacting(10 << 20, 9 << 20, FRAMING_SLACK, 5)  # 10 % > 5 %
    assert not worth_compacting(10 << 20, 9 << 20, FRAMING_SLACK, 10)  # exactly 10 %: no
    assert not worth_compacting(100_000, 50_000, FRAMING_SLACK, 0)  # under the slack
    assert worth_compacting(1 << 20, 0, FRAMING_SLACK, 99)


def test_a_tape_url_is_free_only_when_every_label_it_had_is():
    tapes = {"old": "tape:///t0", "new": "tape:///t0", "t1": "tape:///t1", "t2": "tape:///t2"}
    # t0 was rewritten (new label); its old label is free, its new one is live
    assert free_tapes(tapes, {"new"}, set()) == {"tape:///t1": ["t1"], "tape:///t2": ["t2"]}
    # a running (pinned) set wrote to t1: busy even before its records are in the catalog
    assert free_tapes(tapes, {"new"}, {"t1"}) == {"tape:///t2": ["t2"]}
    assert free_tapes(tapes, set(), set())["tape:///t0"] == ["new", "old"]


@given(st.lists(st.tuples(st.integers(1, 300), st.booleans()), max_size=40), st.integers(1, 900))
def test_compaction_reads_back_to_back_records_together_within_the_limit(shape, limit):
    extents, at = [], 100
    for length, gap in shape:  # records by position, some separated by dead bytes
        at += 17 if gap else 0
        extents.append((at, length, b""))
        at += length
    runs = read_batches(extents, limit)
    assert [e for run in runs for e in run] == extents  # every record once, in order
    for run in runs:
        for (p, n, _), (q, _, _) in itertools.pairwise(run):
            assert p + n == q  # a run lies back to back
        assert len(run) == 1 or sum(n for _, n, _ in run) <= limit
    for a, b in itertools.pairwise(runs):  # a run ends at a gap or at the limit
        (p, n, _), (q, m, _) = a[-1], b[0]
        assert p + n != q or sum(x for _, x, _ in a) + m > limit


@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(0, 60)), max_size=40),
    st.integers(1, 900),
    st.integers(0, 40),
)
def test_compaction_reads_records_a_small_gap_apart_together(shape, limit, gap):
    """With ``gap`` (compaction: room for the meta record after a live record) a run's
    records lie at most ``gap`` apart and the run spans at most ``limit`` bytes."""
    extents, at = [], 100
    for length, space in shape:
        at += space
        extents.append((at, length, b""))
        at += length
    runs = read_batches(extents, limit, gap)
    assert [e for run in runs for e in run] == extents
    for run in runs:
        for (p, n, _), (q, _, _) in itertools.pairwise(run):
            assert p + n <= q <= p + n + gap
        span = run[-1][0] + run[-1][1] - run[0][0]
        assert len(run) == 1 or span <= limit
    for a, b in itertools.pairwise(runs):  # a run ends at a wider gap or at the limit
        (p, n, _), (q, m, _) = a[-1], b[0]
        assert q > p + n + gap or q + m - a[0][0] > limit
