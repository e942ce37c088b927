"""Pacing for ``--balance time``: give each device a share proportional to its speed,
and at run time move not-started work off a device that falls behind (pure decisions).

The shares go to the planner as ``Slot.weight``. At run time ``Pacer`` watches the
devices' progress: one that would finish more than ``margin`` later than the others
hands the work it has not started back, and the dispatcher replans it over the devices
that are ahead (the same replanning as a failed device's work, with observed rates as
weights). ``level_moves`` is the pure core of that decision, tested without clocks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_RATE = 1.0


class Balance(enum.StrEnum):
    """What the planner balances across devices."""

    BYTES = "bytes"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Speed:
    """A device's throughput in bytes per second, and where the figure came from."""

    rate: float
    source: str  # "url", "catalog", "probe"


def level_moves(
    remaining: Sequence[int],
    rates: Sequence[float],
    movable: Sequence[int],
    margin: float = 0.1,
) -> list[int]:
    """How many bytes each device should hand back so that all finish together.

    ``remaining`` is each device's unfinished bytes, ``rates`` its observed throughput,
    ``movable`` how much of its work it has not started (only that can move). The common
    finish level is L = sum(remaining) / sum(rates); a device projected to finish later
    than L * (1 + margin) gives back what it holds above L * rate, capped by ``movable``.
    Devices ahead of the level give nothing. Pure; returns bytes per device.
    """
    total_rate = sum(max(r, 0.0) for r in rates)
    if total_rate <= 0 or not remaining:
        return [0] * len(remaining)
    level = sum(remaining) / total_rate
    out = []
    for rem, rate, mov in zip(remaining, rates, movable, strict=True):
        rate = max(rate, 0.0)
        late = rem > level * (1 + margin) * rate
        out.append(int(min(mov, rem - level * rate)) if late and mov > 0 else 0)
    return out


def ahead_of_level(remaining: Sequence[int], rates: Sequence[float]) -> list[bool]:
    """Which devices would finish before the common level L (those may take work)."""
    total_rate = sum(max(r, 0.0) for r in rates)
    if total_rate <= 0:
        return [False] * len(remaining)
    level = sum(remaining) / total_rate
    return [rate > 0 and rem < level * rate for rem, rate in zip(remaining, rates, strict=True)]


class Pacer:
    """Watches a time-balanced run and decides when a device is behind (see module doc).

    ``predicted`` are the planned rates (bytes/s). The pacer only acts after ``warmup``
    seconds and at most every ``every`` seconds, and only moves at least ``min_move``
    bytes at a time, so noise in the first records does not shuffle work around. Rates
    are measured from the first look after the warm-up on (``baseline``): the first
    seconds of a run are distorted by buffers filling (a remote device's socket and
    pipelined writes accept megabytes at once, whatever its link can carry).
    """

    def __init__(
        self,
        predicted: Mapping[int, float],
        *,
        margin: float = 0.25,
        warmup: float = 1.0,
        window: float = 2.0,
        every: float = 1.0,
        min_move: int = 4 << 20,
    ) -> None:
        self.predicted = dict(predicted)
        self.margin, self.warmup, self.every, self.min_move = margin, warmup, every, min_move
        self.window = window
        self.last = 0.0
        self.base: dict[int, int] | None = None
        self.base_time = 0.0

    def baseline(self, elapsed: float, done: Mapping[int, int]) -> bool:
        """Take the starting point of rate measurement once. True while the rates are not
        yet measured over ``window`` seconds (then the pacer must not act)."""
        if self.base is None:
            self.base, self.base_time = dict(done), elapsed
        return elapsed - self.base_time < self.window

    def due(self, elapsed: float) -> bool:
        """True when it is time for another look."""
        if elapsed < self.warmup or elapsed - self.last < self.every:
            return False
        self.last = elapsed
        return True

    def rates(
        self, elapsed: float, done: Mapping[int, int], busy: Mapping[int, float | None]
    ) -> dict[int, float]:
        """Observed bytes/s: since the baseline for a device still busy (``busy`` None),
        over its busy time for one that ran out of work. A busy device that has written
        nothing since the baseline counts as stalled: rate 0."""
        base = self.base or {}
        out = {}
        for d, n in done.items():
            if busy[d] is None:
                n, spent = n - base.get(d, 0), elapsed - (self.base_time if d in base else 0)
            else:
                spent = busy[d]
            out[d] = n / spent if spent and spent > 0 else self.predicted[d]
        return out

    def moves(
        self,
        rates: Mapping[int, float],
        remaining: Mapping[int, int],
        movable: Mapping[int, int],
    ) -> dict[int, int]:
        """Bytes each device should give back now (devices absent: nothing)."""
        devs = sorted(remaining)
        want = level_moves(
            [remaining[d] for d in devs],
            [rates[d] for d in devs],
            [movable[d] for d in devs],
            self.margin,
        )
        return {d: n for d, n in zip(devs, want, strict=True) if n >= self.min_move}

    @staticmethod
    def finish_estimate(assigned: int, rate: float) -> float:
        """Predicted seconds for ``assigned`` bytes at ``rate``."""
        return assigned / rate if rate > 0 else float("inf")
