"""Speed-aware balancing: speed sources, proportional plans, the pacer's decisions,
taking back unstarted work, and a time-balanced backup that rebalances at run time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.devices.probe import probe_speed
from parbackup.devices.registry import open_device
from parbackup.devices.throttle import ThrottledDevice, TokenBucket
from parbackup.engine.devices import open_devices
from parbackup.engine.prepare import make_plan, reserve_for
from parbackup.engine.report import BackupOptions
from parbackup.engine.speeds import device_speeds, url_speed
from parbackup.engine.workqueue import Sent, WorkQueue
from parbackup.entries import Entries
from parbackup.model import FileEntry, Kind, Piece, Slot, Space
from parbackup.plan import shares_of
from parbackup.plan.pacing import Balance, Pacer, Speed, ahead_of_level, level_moves


def _entries(sizes):
    return Entries.of(FileEntry(f"/f{i}", Kind.FILE, s, 0o644, 0) for i, s in enumerate(sizes))


def _open(urls):
    alive, dead = open_devices(urls, create_labels=True)
    assert not dead
    return alive


def _fake(url, label, free=None):
    return SimpleNamespace(url=url, label=label, space=Space(free, None))


# -- where speeds come from ------------------------------------------------------------
def test_url_speed_parses_rates():
    assert url_speed("memory://s1?speed=50M") == 50e6
    assert url_speed("memory://s1?speed=2MiB/s") == 2 * 1024 * 1024
    assert url_speed("memory://s1") is None


def test_speed_precedence_url_then_catalog_then_probe():
    devs = [_fake("memory://p1?speed=10M", "L1"), _fake("memory://p2", "L2"), _fake("m3", "L3")]
    probed = []

    def probe(dev):
        probed.append(dev.url)
        return 7.0

    known = {"L2": 20e6}
    speeds = device_speeds(devs, known, probe)
    # p3 has no catalog figure, so the catalog is not mixed with probes: both probed
    assert speeds == [Speed(10e6, "url"), Speed(7.0, "probe"), Speed(7.0, "probe")]
    assert probed == ["memory://p2", "m3"]
    known["L3"] = 30e6
    speeds = device_speeds(devs, known, probe)
    assert speeds == [Speed(10e6, "url"), Speed(20e6, "catalog"), Speed(30e6, "catalog")]


def test_failed_probe_assumes_the_mean_of_the_others():
    devs = [_fake("q1", "a"), _fake("q2", "b"), _fake("q3", "c")]
    rates = {"q1": 10.0, "q2": None, "q3": 30.0}
    speeds = device_speeds(devs, {}, lambda dev: rates[dev.url])
    assert speeds[1] == Speed(20.0, "assumed")


def test_probe_writes_then_deletes_its_scratch_object():
    dev = open_device("memory://probe1")
    rate = probe_speed(dev, limit=1 << 20, seconds=100)
    assert rate > 0
    assert dev.list("") == []


def test_catalog_remembers_speeds(tmp_path):
    with Catalog(str(tmp_path / "c.sqlite")) as cat:
        cat.remember_device("L1", "/x", "file")
        assert cat.device_speeds() == {}
        cat.record_speed("L1", 100.0)
        cat.record_speed("L1", 300.0)
        cat.record_speed("unknown", 5.0)  # a label never seen: nothing to attach it to
        assert cat.device_speeds() == {"L1": 200.0}


# -- plans proportional to speed -------------------------------------------------------
@given(
    sizes=st.lists(st.integers(0, 10**6), min_size=1, max_size=60),
    rates=st.lists(st.integers(1, 1000), min_size=2, max_size=5),
)
def test_time_plan_shares_follow_speeds(sizes, rates):
    spaces = [Space(None, None)] * len(rates)
    speeds = [Speed(float(r), "url") for r in rates]
    plan = make_plan(_entries(sizes), spaces, BackupOptions(balance=Balance.TIME), speeds=speeds)
    got = plan.device_bytes()
    total = sum(sizes)
    assert sum(got) == total
    for share, r in zip(got, rates, strict=True):
        assert abs(share - total * r / sum(rates)) <= 1  # fill ends exactly at each share
    equal = make_plan(_entries(sizes), spaces, BackupOptions(balance=Balance.BYTES), speeds=speeds)
    assert max(equal.device_bytes()) - min(equal.device_bytes()) <= 1


def test_time_plan_still_respects_free_space():
    devs = _open(["memory://cap1?capacity=1M", "memory://cap2"])
    speeds = [Speed(1000.0, "url"), Speed(1.0, "url")]  # the fast one is small
    entries = _entries([800_000, 800_000])
    spaces = [d.space for d in devs]
    plan = make_plan(entries, spaces, BackupOptions(balance=Balance.TIME), speeds=speeds)
    room = devs[0].space.free - reserve_for(entries, 2)
    assert 0 < room < 1_000_000
    assert plan.device_bytes()[0] == room
    assert sum(plan.device_bytes()) == 1_600_000


# -- the pacer's decision (pure) -------------------------------------------------------
def test_level_moves_on_schedule_moves_nothing():
    assert level_moves([100, 300], [1.0, 3.0], [100, 300]) == [0, 0]


def test_level_moves_takes_the_excess_of_a_late_device():
    # level = 400 / 4 = 100 s; the slow device holds 300 bytes at 1 B/s, should hold 100
    assert level_moves([300, 100], [1.0, 3.0], [300, 100]) == [200, 0]
    # only what it has not started can move
    assert level_moves([300, 100], [1.0, 3.0], [50, 100]) == [50, 0]


@given(
    st.lists(
        st.tuples(st.integers(0, 10**9), st.floats(0.001, 1e6), st.integers(0, 10**9)),
        min_size=1,
        max_size=8,
    )
)
def test_level_moves_properties(devs):
    remaining = [r for r, _, _ in devs]
    rates = [v for _, v, _ in devs]
    movable = [min(m, r) for r, _, m in devs]
    moves = level_moves(remaining, rates, movable, margin=0.1)
    level = sum(remaining) / sum(rates)
    for rem, rate, mov, give in zip(remaining, rates, movable, moves, strict=True):
        assert 0 <= give <= mov
        if rem <= level * rate:  # on or ahead of the level: gives nothing
            assert give == 0
        if give:
            assert rem - give >= level * rate - 1  # never gives below the level
    ahead = ahead_of_level(remaining, rates)
    assert not any(a and g for a, g in zip(ahead, moves, strict=True))
    if any(moves):  # water-filling the moved bytes over those ahead: slowest finish drops
        assert any(ahead)
        before = max(r / v for r, v in zip(remaining, rates, strict=True))
        takers = [i for i, a in enumerate(ahead) if a]
        slots = [Slot(room=None, load=remaining[i], weight=rates[i]) for i in takers]
        after_rem = [r - g for r, g in zip(remaining, moves, strict=True)]
        for i, share in zip(takers, shares_of(sum(moves), slots), strict=True):
            after_rem[i] += share
        after = max(r / v for r, v in zip(after_rem, rates, strict=True))
        assert after <= before * (1 + 1e-6) + 1e-6


def test_pacer_waits_for_warmup_and_ignores_small_moves():
    pacer = Pacer({0: 1.0, 1: 1.0}, warmup=1.0, window=1.0, every=1.0, min_move=100)
    assert not pacer.due(0.5)
    assert pacer.due(1.0)
    assert not pacer.due(1.5)
    assert pacer.due(2.0)
    # rates count from the baseline: buffers filling at the start do not count
    assert pacer.baseline(1.0, {0: 1000, 1: 1000})  # taken; too early to act
    assert not pacer.baseline(2.0, {0: 0, 1: 0})  # a window of 1 s has passed; kept
    # device 0 ran at 10 B/s since; device 1 wrote 2000 B in 0.5 s of work and is idle now
    rates = pacer.rates(2.0, {0: 1010, 1: 2000}, {0: None, 1: 0.5})
    assert rates == {0: 10.0, 1: 4000.0}
    # still busy, nothing written after the warm-up: stalled; idle and never busy: predicted
    assert pacer.rates(2.0, {0: 1000, 1: 0}, {0: None, 1: 0.0}) == {0: 0.0, 1: 1.0}
    moves = pacer.moves(rates, {0: 10_000, 1: 500}, {0: 9_000, 1: 0})
    assert set(moves) == {0} and moves[0] == 9_000
    assert pacer.moves(rates, {0: 50, 1: 0}, {0: 50, 1: 0}) == {}  # below min_move


# -- taking unstarted work back from a device's queue --------------------------------
def test_take_back_removes_from_the_end_and_cuts_the_last_item():
    q = WorkQueue()
    q.extend([0, 1, 2], [0, 0, 0], [100, 30, 20])
    assert q.take_back(25, min_cut=10) == [Piece(2, 0, 20)]  # 5 left is below one chunk
    assert q.take_back(60, min_cut=10) == [Piece(1, 0, 30), Piece(0, 70, 30)]
    assert q.take(10, 1 << 30, 1 << 30) == [(0, 0, 70)]
    assert len(q) == 0 and q.bytes == 0


def test_large_items_go_in_parts_and_their_unread_tail_can_move():
    q = WorkQueue()
    q.extend([7], [0], [250])
    assert q.take(1, 1 << 30, split=100) == [(7, 0, 100)]
    assert q.take_back(120, min_cut=10) == [Piece(7, 130, 120)]
    assert q.take(5, 1 << 30, split=100) == [(7, 100, 30)]


# -- throttle wrapper ------------------------------------------------------------------
def test_token_bucket_holds_the_rate():
    now = [0.0]
    bucket = TokenBucket(1000.0, burst=100.0, clock=lambda: now[0])
    assert bucket.delay(100) == 0.0
    assert bucket.delay(500) == pytest.approx(0.5)  # 500 bytes in debt at 1000 B/s
    now[0] = 0.5
    assert bucket.delay(0) == 0.0


def test_limit_wraps_any_device():
    dev = open_device("memory://thr1?limit=100M")
    assert isinstance(dev, ThrottledDevice)
    dev.open()
    w = dev.create("x")
    w.write(b"abc")
    w.commit()
    assert dev.read("x", 0, 3) == b"abc"


# -- end to end: a device slower than its speed hint gets work taken away -------------
@pytest.mark.slow
def test_time_balance_moves_work_off_a_device_behind_its_pace(tmp_path, device_dirs):
    from conftest import make_tree

    tree = make_tree(tmp_path / "src", seed=3, files=30, max_size=100_000, big=(40 << 20,))
    slow, fast = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    # both claim the same speed, but the first is held to 4 MB/s: it falls behind
    r = run_cli(
        "backup",
        str(tree),
        "-d",
        f"{slow}?speed=50M&limit=4M",
        "-d",
        f"{fast}?speed=50M",
        "--balance",
        "time",
        "--catalog",
        cat,
        "--json",
    )
    assert r.code == 0, r.err
    doc = r.json
    slow_report, fast_report = doc["devices"]
    assert slow_report["moved"], doc  # work was handed over
    assert fast_report["bytes"] > slow_report["bytes"]
    assert slow_report["predicted"] == fast_report["predicted"]
    assert "finished" in slow_report and "finished" in fast_report
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(tmp_path / "out", tree)) == snapshot(tree)
    # the measured speeds were learned; a second run plans from them without hints
    with Catalog(cat) as c:
        speeds = c.device_speeds()
    assert len(speeds) == 2


def test_plan_dry_run_balances_by_time_without_writing(tmp_path, tree, device_dirs):
    fast, slow = device_dirs(2)
    r = run_cli(
        "plan",
        str(tree),
        "-d",
        f"{fast}?speed=30M",
        "-d",
        f"{slow}?speed=10M",
        "--balance",
        "time",
        "--catalog",
        str(tmp_path / "none.sqlite"),
        "--json",
    )
    assert r.code == 0, r.err
    a, b = r.json["devices"]
    assert (a["speed_from"], b["speed_from"]) == ("url", "url")
    assert abs(a["bytes"] - 3 * b["bytes"]) <= 3
    assert a["predicted"] == pytest.approx(b["predicted"], abs=0.01)
    assert list(fast.iterdir()) == [] and list(slow.iterdir()) == []  # nothing written


@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=8),
    ops=st.lists(
        st.tuples(st.sampled_from(["send", "done", "durable", "take"]), st.integers(0, 80)),
        max_size=40,
    ),
)
def test_queue_and_sent_keep_every_byte(sizes, ops):
    """Any interleaving of sending, writing, making durable and taking work back keeps
    every byte in exactly one place: queued, sent and not durable, durable, or moved."""
    q, sent = WorkQueue(), Sent()
    q.extend(range(len(sizes)), [0] * len(sizes), sizes)
    durable = moved = 0
    for op, n in ops:
        if op == "send":
            batch = q.take(2, 50, split=25)
            sent.add_columns(*zip(*batch, strict=True) if batch else ((), (), ()))
        elif op == "done":
            sent.mark_done(min(sent.next_seq - 1, sent.done + 1 + n % 3))
        elif op == "durable":
            upto = min(sent.done, sent.first + n % 3)
            before = sum(p.size for p in sent.pieces())
            sent.retire(upto)
            durable += before - sum(p.size for p in sent.pieces())
        else:
            moved += sum(p.size for p in q.take_back(n, min_cut=10))
        held = sum(p.size for p in sent.pieces())
        assert q.bytes + held + durable + moved == sum(sizes)
        assert 0 <= sent.undone_bytes <= held
