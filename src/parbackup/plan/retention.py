"""Which backup sets a retention policy keeps, and why (``parbackup forget``, M1).

Pure: sets (id, time, group) and a ``Policy`` in, a ``Decision`` per set out. No I/O, no
clock: "now" is the newest set of each group, so the same sets and policy always give the
same answer.

The semantics are restic's ``forget``:

- sets are grouped (``SetPoint.group``: by default the sorted sources), and the policy is
  applied to each group on its own;
- within a group, sets are walked newest first. ``keep_last N`` keeps the N newest.
  ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest set of each of the N
  newest periods (hour, day, ISO week, month, year, in the time zone each set's time
  carries) that hold a set. When a period rule still has count left at the oldest set
  of the group, that oldest set is kept too ("oldest daily"), so the history reaches as
  far back as the policy allows. A count of ``UNLIMITED`` (-1) keeps every period.
- ``keep_within D`` keeps every set newer than (newest set's time - D), D in calendar
  units (``1y5m7d2h``).
- Beyond restic: the set made last in each group (highest ``seq``: the one every other
  command calls ``latest``) is always kept ("latest"), whatever its time says. A clock
  once set ahead (a set dated 2031) made the newest set of every later night look old,
  so ``--keep-last 1`` kept the stale set and forgot each new one.

The rules are independent (a set is kept if any rule keeps it), so a stricter policy
(smaller counts, shorter duration) never keeps a set a looser one forgets. A policy with
no rule would keep nothing and is refused (``UsageError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from parbackup.errors import UsageError

UNLIMITED = -1
"""A count meaning "every period" (restic's ``unlimited``)."""


@dataclass(frozen=True)
class Within:
    """A calendar duration: years, months, days, hours (restic's ``1y5m7d2h``)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __bool__(self) -> bool:
        return any((self.years, self.months, self.days, self.hours))

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    def before(self, t: datetime) -> datetime:
        """``t`` minus this duration (months and years by the calendar, day clamped);
        the earliest time there is when that lies before the calendar's start."""
        month0 = t.year * 12 + (t.month - 1) - (self.years * 12 + self.months)
        year, month = divmod(month0, 12)
        try:
            day = min(t.day, _days_in(year, month + 1))
            back = t.replace(year=year, month=month + 1, day=day)
            return back - timedelta(days=self.days, hours=self.hours)
        except (ValueError, OverflowError):
            return datetime.min.replace(tzinfo=t.tzinfo)


_WITHIN = re.compile(r"(\d+)([ymdh])")


def parse_within(text: str) -> Within:
    """``1y5m7d2h`` (any of the parts, each at most once, in that order) -> Within."""
    raw = text.strip().lower()
    pos, found = 0, {}
    for m in _WITHIN.finditer(raw):
        if m.start() != pos or m.group(2) in found:
            break
        found[m.group(2)] = int(m.group(1))
        pos = m.end()
    order = "ymdh"
    units = list(found)  # in the order given
    if not raw or pos != len(raw) or units != sorted(units, key=order.index):
        raise UsageError(
            f"duration {text!r}: give years, months, days, hours in that order, e.g. 7d,"
            " 36h, 1y6m, 1y5m7d2h"
        )
    return Within(found.get("y", 0), found.get("m", 0), found.get("d", 0), found.get("h", 0))


def _days_in(year: int, month: int) -> int:
    """Days in ``month`` (1-12) of ``year``."""
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - timedelta(days=1)).day


@dataclass(frozen=True)
class Policy:
    """How many of each kind of set to keep (0: the rule is off; UNLIMITED: all)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Within = field(default_factory=Within)

    def counts(self) -> dict[str, int]:
        return {
            "last": self.last,
            "hourly": self.hourly,
            "daily": self.daily,
            "weekly": self.weekly,
            "monthly": self.monthly,
            "yearly": self.yearly,
        }

    @property
    def empty(self) -> bool:
        """True when no rule is on: such a policy would keep nothing."""
        return not self.within and not any(self.counts().values())

    def check(self) -> None:
        """UsageError for a count below UNLIMITED or a policy that keeps nothing."""
        for name, n in self.counts().items():
            if n < UNLIMITED:
                raise UsageError(f"--keep-{name} {n}: give a count >= 0, or -1 for unlimited")
        if self.empty:
            raise UsageError(
                "this policy keeps nothing: give at least one --keep-* option"
                " (forgetting every set is refused)"
            )


@dataclass(frozen=True)
class SetPoint:
    """One set as retention sees it. ``seq`` breaks ties between equal times (higher:
    newer); ``time`` must carry a time zone (its periods are counted in that zone)."""

    id: str
    time: datetime
    group: str = ""
    seq: int = 0


@dataclass(frozen=True)
class Decision:
    """Whether a set is kept, and the rules that keep it (empty when it goes)."""

    set: SetPoint
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


Bucket = Callable[[datetime], tuple[int, ...]]
_BUCKETS: dict[str, Bucket] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def _newest_first(sets: Iterable[SetPoint]) -> list[SetPoint]:
    return sorted(sets, key=lambda s: (s.time, s.seq, s.id), reverse=True)


def apply_group(sets: Sequence[SetPoint], policy: Policy) -> list[Decision]:
    """The decisions for one group of sets, newest first."""
    policy.check()
    ordered = _newest_first(sets)
    if not ordered:
        return []
    reasons: list[list[str]] = [[] for _ in ordered]
    if policy.within:
        since = policy.within.before(ordered[0].time)
        for i, s in enumerate(ordered):
            if s.time > since:
                reasons[i].append(f"within {policy.within}")
    for i in range(min(len(ordered), policy.last) if policy.last >= 0 else len(ordered)):
        reasons[i].append("last")
    for name, bucket in _BUCKETS.items():
        left = getattr(policy, name)
        last: tuple[int, ...] | None = None
        for i, s in enumerate(ordered):
            if left == 0:
                break
            value = bucket(s.time)
            oldest = i == len(ordered) - 1
            if value != last or oldest:
                reasons[i].append(name if value != last else f"oldest {name}")
                last = value
                if left > 0:
                    left -= 1
    latest = max(
        range(len(ordered)), key=lambda i: (ordered[i].seq, ordered[i].time, ordered[i].id)
    )
    if not reasons[latest]:  # dated before others by a clock set ahead once
        reasons[latest].append("latest")
    return [Decision(s, tuple(r)) for s, r in zip(ordered, reasons, strict=True)]


def apply_policy(sets: Iterable[SetPoint], policy: Policy) -> list[Decision]:
    """The decisions for every set, group by group (groups sorted), newest first within
    each. Refuses (UsageError) a policy that keeps nothing."""
    policy.check()
    groups: dict[str, list[SetPoint]] = {}
    for s in sets:
        groups.setdefault(s.group, []).append(s)
    out: list[Decision] = []
    for key in sorted(groups):
        out.extend(apply_group(groups[key], policy))
    return out
