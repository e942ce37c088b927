"""The retention policy (plan/retention.py): examples and Hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.errors import UsageError
from parbackup.plan.retention import (
    UNLIMITED,
    Policy,
    SetPoint,
    Within,
    apply_group,
    apply_policy,
    parse_within,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def kept(decisions) -> set[str]:
    return {d.set.id for d in decisions if d.keep}


def nightly(n: int, group: str = "g", start: datetime = T0) -> list[SetPoint]:
    return [SetPoint(f"{group}{i}", start + timedelta(days=i, hours=2), group, i) for i in range(n)]


def test_keep_daily_3_over_a_week_keeps_the_last_three_nights():
    decisions = apply_policy(nightly(7), Policy(daily=3))
    assert kept(decisions) == {"g6", "g5", "g4"}
    assert {d.set.id: d.reasons for d in decisions}["g6"] == ("daily",)


def test_the_newest_of_each_day_is_kept_and_the_oldest_when_days_run_out():
    sets = [SetPoint(f"s{i}", T0 + timedelta(hours=8 * i), "g", i) for i in range(6)]  # 2 days
    decisions = {d.set.id: d.reasons for d in apply_group(sets, Policy(daily=5))}
    # day 2: s5 (newest of it); day 1: s2; count left at the oldest set: kept as oldest
    assert [i for i, r in decisions.items() if r] == ["s5", "s2", "s0"]
    assert decisions["s0"] == ("oldest daily",)


def test_groups_are_decided_apart():
    sets = nightly(5, "a") + nightly(2, "b", T0 + timedelta(days=30))
    assert kept(apply_policy(sets, Policy(last=2))) == {"a4", "a3", "b1", "b0"}


def test_keep_within_counts_back_from_the_newest_set_by_the_calendar():
    sets = [
        SetPoint(f"m{i}", datetime(2026, 1 + i, 31 if i in (0, 2) else 28, tzinfo=UTC))
        for i in range(3)
    ]
    # newest 2026-03-31; one month back is 2026-02-28 (clamped): m1 (02-28) is not newer
    assert kept(apply_policy(sets, Policy(within=parse_within("1m")))) == {"m2"}
    assert kept(apply_policy(sets, Policy(within=parse_within("1m1d")))) == {"m2", "m1"}


def test_periods_are_counted_in_each_sets_own_time_zone():
    east = timezone(timedelta(hours=10))
    # 15:00 and 23:00 UTC on the same UTC day are two days in UTC+10
    sets = [
        SetPoint("a", datetime(2026, 5, 1, 15, tzinfo=UTC).astimezone(east), seq=0),
        SetPoint("b", datetime(2026, 5, 1, 23, tzinfo=UTC).astimezone(east), seq=1),
    ]
    assert kept(apply_policy(sets, Policy(daily=2))) == {"a", "b"}
    utc = [SetPoint(s.id, s.time.astimezone(UTC), seq=s.seq) for s in sets]
    assert kept(apply_policy(utc, Policy(daily=1))) == {"b"}


@pytest.mark.parametrize(
    "text, within",
    [("1y5m7d2h", Within(1, 5, 7, 2)), ("36h", Within(hours=36)), ("2D", Within(days=2))],
)
def test_durations_parse(text, within):
    assert parse_within(text) == within


@pytest.mark.parametrize("text", ["", "7", "2w", "1d1y", "1d1d", "d", "1.5d", "-1d"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_within(text)


def test_a_policy_that_keeps_nothing_is_refused():
    with pytest.raises(UsageError, match="keeps nothing"):
        apply_policy(nightly(3), Policy())
    with pytest.raises(UsageError):
        apply_policy(nightly(3), Policy(daily=-2))


# -- properties ----------------------------------------------------------------------------

counts = st.one_of(st.integers(0, 6), st.just(UNLIMITED))
withins = st.builds(
    Within, st.integers(0, 1), st.integers(0, 3), st.integers(0, 20), st.integers(0, 30)
)
policies = st.builds(
    Policy,
    last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    within=withins,
).filter(lambda p: not p.empty)


@st.composite
def set_lists(draw) -> list[SetPoint]:
    """Sets at random times over ~3 years, some at the same time, in up to 3 groups."""
    offsets = draw(st.lists(st.integers(0, 3 * 365 * 24), min_size=1, max_size=40))
    groups = draw(st.lists(st.sampled_from("abc"), min_size=len(offsets), max_size=len(offsets)))
    return [
        SetPoint(f"s{i}", T0 + timedelta(hours=h), g, i)
        for i, (h, g) in enumerate(zip(offsets, groups, strict=True))
    ]


def made_last(sets: list[SetPoint], group: str) -> str:
    """The id of the set of ``group`` made last (highest seq): what ``latest`` names."""
    return max((s for s in sets if s.group == group), key=lambda s: (s.seq, s.time, s.id)).id


@settings(max_examples=100, deadline=None)
@given(set_lists(), policies)
def test_the_set_made_last_is_always_kept_whatever_its_time(sets, policy):
    """A clock once set ahead dates an older set after the newest: the set made last
    (what every other command calls latest) is still kept."""
    decisions = apply_policy(sets, policy)
    for group in {s.group for s in sets}:
        assert made_last(sets, group) in kept(decisions)


def test_a_set_dated_ahead_by_a_wrong_clock_does_not_make_the_latest_go():
    ahead = SetPoint("ahead", datetime(2031, 1, 1, tzinfo=UTC), seq=0)
    sets = [ahead] + [
        SetPoint(f"night{i}", datetime(2026, 12, 1 + i, 2, tzinfo=UTC), seq=1 + i) for i in range(3)
    ]
    for policy in (Policy(last=1), Policy(daily=1), Policy(within=Within(days=1))):
        decisions = {d.set.id: d.reasons for d in apply_policy(sets, policy)}
        assert decisions["night2"] == ("latest",)
        assert decisions["ahead"] and not decisions["night0"] and not decisions["night1"]


def _le(p: int, q: int) -> bool:
    """p keeps no more periods than q (UNLIMITED is the largest)."""
    return q == UNLIMITED or (p != UNLIMITED and p <= q)


def _shrink(draw, p: Policy) -> Policy:
    """A policy at most as generous as ``p`` in every rule."""

    def less(n: int) -> int:
        top = 12 if n == UNLIMITED else n
        return draw(st.integers(0, top))

    w = p.within
    return Policy(
        *(less(n) for n in p.counts().values()),
        within=Within(
            draw(st.integers(0, w.years)),
            draw(st.integers(0, w.months)),
            draw(st.integers(0, w.days)),
            draw(st.integers(0, w.hours)),
        ),
    )


@settings(max_examples=100, deadline=None)
@given(set_lists(), policies, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(sets, policy, rnd):
    first = apply_policy(sets, policy)
    shuffled = list(sets)
    rnd.shuffle(shuffled)
    assert apply_policy(shuffled, policy) == first
    assert {d.set.id for d in first} == {s.id for s in sets}  # every set decided once


@settings(max_examples=100, deadline=None)
@given(set_lists(), policies)
def test_the_newest_of_every_group_is_always_kept(sets, policy):
    decisions = apply_policy(sets, policy)
    for group in {s.group for s in sets}:
        newest = max((s for s in sets if s.group == group), key=lambda s: (s.time, s.seq, s.id))
        assert newest.id in kept(decisions)


@settings(max_examples=100, deadline=None)
@given(set_lists(), st.integers(1, 50))
def test_keep_last_n_keeps_exactly_the_n_newest(sets, n):
    decisions = apply_policy(sets, Policy(last=n))
    for group in {s.group for s in sets}:
        ordered = sorted((s for s in sets if s.group == group), key=lambda s: (s.time, s.seq, s.id))
        want = {s.id for s in ordered[-n:]} | {made_last(sets, group)}
        got = {d.set.id for d in decisions if d.keep and d.set.group == group}
        assert got == want


@settings(max_examples=100, deadline=None)
@given(set_lists(), policies)
def test_never_removes_the_newest_set_of_a_period_the_policy_keeps(sets, policy):
    """For each period rule with count N, the newest set of each of the N newest periods
    that hold a set (all of them for UNLIMITED) is kept, giving that rule as a reason."""
    decisions = {d.set.id: d for d in apply_policy(sets, policy)}
    keys = {
        "hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "daily": lambda t: t.date(),
        "weekly": lambda t: t.isocalendar()[:2],
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: t.year,
    }
    for group in {s.group for s in sets}:
        mine = [s for s in sets if s.group == group]
        for rule, key in keys.items():
            n = getattr(policy, rule)
            newest: dict = {}
            for s in sorted(mine, key=lambda s: (s.time, s.seq, s.id)):
                newest[key(s.time)] = s  # the last one wins: the newest of its period
            periods = sorted(newest, reverse=True)
            for period in periods if n == UNLIMITED else periods[:n]:
                assert rule in decisions[newest[period].id].reasons


@settings(max_examples=100, deadline=None)
@given(set_lists(), policies, st.data())
def test_a_stricter_policy_never_keeps_more(sets, policy, data):
    stricter = _shrink(data.draw, policy)
    if stricter.empty:
        return
    assert all(
        _le(a, b) for a, b in zip(stricter.counts().values(), policy.counts().values(), strict=True)
    )
    assert kept(apply_policy(sets, stricter)) <= kept(apply_policy(sets, policy))


@settings(max_examples=100, deadline=None)
@given(set_lists(), withins.filter(bool))
def test_keep_within_keeps_exactly_what_is_newer_than_the_newest_minus_d(sets, within):
    decisions = apply_policy(sets, Policy(within=within))
    for group in {s.group for s in sets}:
        mine = [s for s in sets if s.group == group]
        since = within.before(max(s.time for s in mine))
        assert {d.set.id for d in decisions if d.keep and d.set.group == group} == {
            s.id for s in mine if s.time > since
        } | {made_last(sets, group)}
