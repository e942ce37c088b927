"""Speed-aware balancing (``--balance time``): give each device a share of the bytes
proportional to its throughput, so that all devices finish together.

Where a device's throughput comes from, first found wins:

1. ``?speed=RATE`` on its URL (bytes per second, e.g. ``?speed=50M``);
2. what the catalog measured for its label in earlier backups;
3. a short probe: write up to ``PROBE_BYTES`` to a scratch object, commit, delete.

The shares go to the planner as ``Slot.weight``; the planner's water-filling still caps
every device at its free space. At run time ``Pacer`` watches the devices: one that falls
behind so that it would finish more than ``margin`` later than the others hands the items
it has not started back, and they are replanned over the devices that are ahead (the same
replanning as a failed device's work, with observed rates as weights).

``level_moves`` is the pure core of that decision, tested without clocks.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from parbackup.catalog import Catalog
from parbackup.devices.base import Device
from parbackup.devices.url import parse_size
from parbackup.engine.devices import OpenDevice
from parbackup.engine.writer import TakeBack
from parbackup.errors import DeviceError, PlanError, UsageError
from parbackup.model import DeviceReport, Item, Piece, Slot
from parbackup.plan import coalesce, replan
from parbackup.progress import Notice

PROBE_BYTES = 16 << 20
PROBE_SECONDS = 0.5
PROBE_NAME = ".parbackup-speed-probe"
MIN_RATE = 1.0
LEARN_BYTES = 4 << 20


class Balance(enum.StrEnum):
    """What the planner balances across devices."""

    BYTES = "bytes"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Speed:
    """A device's throughput in bytes per second, and where the figure came from."""

    rate: float
    source: str  # "url", "catalog", "probe"


def url_speed(device: Device) -> float | None:
    """``?speed=RATE`` from the device's URL, in bytes per second."""
    value = device.url.params.get("speed")
    if value is None:
        return None
    rate = parse_size(value.removesuffix("/s"))
    if rate <= 0:
        raise UsageError(f"{device.url.display}: speed must be positive")
    return float(rate)


def probe_speed(
    device: Device,
    *,
    limit: int = PROBE_BYTES,
    seconds: float = PROBE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Write up to ``limit`` bytes (or for ``seconds``) to a scratch object; bytes/s.

    The commit is timed too, so a device that buffers writes and pays at commit is not
    mistaken for a fast one. The scratch object is always deleted.
    """
    block = bytes(256 << 10)  # small blocks: a slow device is not handed much beyond time
    written = 0
    started = clock()
    writer = device.replace(PROBE_NAME)
    try:
        while written < limit:
            writer.write(block)
            written += len(block)
            if clock() - started >= seconds:
                break
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        elapsed = clock() - started
        with contextlib.suppress(DeviceError):
            device.delete(PROBE_NAME)
    return max(MIN_RATE, written / max(elapsed, 1e-6))


def device_speeds(
    devices: Sequence[OpenDevice],
    known: Mapping[str, float],
    *,
    probe: Callable[[Device], float] = probe_speed,
) -> list[Speed]:
    """The throughput of every device: URL hint, else catalog, else a probe write.

    Catalog figures (measured over whole backups: source reads, hashing and per-file
    costs included) and probe figures (raw large writes) are not comparable, so the
    catalog is used only when it knows every device the URLs leave open; otherwise
    those devices are all probed. A device whose probe fails (or that has too little room
    to probe) is assumed to run at the mean speed of the others ("assumed").
    """
    hints = [url_speed(dev.device) for dev in devices]
    learned = all(
        known.get(dev.label.label, 0) > 0
        for dev, hint in zip(devices, hints, strict=True)
        if hint is None
    )

    def one(dev: OpenDevice, hint: float | None) -> Speed | None:
        if hint is not None:
            return Speed(hint, "url")
        if learned:
            return Speed(float(known[dev.label.label]), "catalog")
        if dev.space.free is not None and dev.space.free < 4 * PROBE_BYTES:
            return None
        try:
            return Speed(probe(dev.device), "probe")
        except DeviceError:
            return None

    # Probes run at once, one thread per device, so probing costs one probe's time.
    with ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
        found = list(pool.map(one, devices, hints))
    rates = [s.rate for s in found if s is not None]
    mean = sum(rates) / len(rates) if rates else 1.0
    return [s if s is not None else Speed(mean, "assumed") for s in found]


def dry_run_speeds(devices: Sequence[OpenDevice], known: Mapping[str, float]) -> list[Speed]:
    """Speeds for a dry run: like ``device_speeds`` but never writing a probe."""

    def no_probe(device: Device) -> float:
        raise DeviceError("a dry run writes no probe")

    return device_speeds(devices, known, probe=no_probe)


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


# -- glue with the backup run (engine/backup.py calls these) -----------------------------
def speeds_for(
    devices: Sequence[OpenDevice], mode: Balance, known: Mapping[str, float]
) -> list[Speed] | None:
    """Speeds for planning: all of them (probing if needed) in time mode, else None."""
    if mode is not Balance.TIME:
        return None
    return device_speeds(devices, known)


def predict(
    run: Any,
    devices: Sequence[OpenDevice],
    speeds: Sequence[Speed] | None,
    planned: Sequence[int],
    mode: Balance,
) -> None:
    """Write each device's assumed speed and predicted seconds into the run's reports,
    and give a time-balanced run its pacer."""
    if not speeds:
        return
    for dev, speed, nbytes in zip(devices, speeds, planned, strict=True):
        report = run.reports[dev.index]
        report.speed = round(speed.rate, 1)
        report.predicted = round(Pacer.finish_estimate(nbytes, speed.rate), 3)
    if mode is Balance.TIME and len(devices) > 1:
        run.pacer = Pacer({d.index: s.rate for d, s in zip(devices, speeds, strict=True)})


def pace(run: Any) -> None:
    """Move not-started work off devices that fell behind onto those ahead (time mode).

    ``run`` is the backup engine's ``_Run``: its ``outstanding`` deques mirror each
    writer's queue (head = the item being written), ``assigned`` counts bytes given to
    each device, ``reports[d].bytes`` the bytes it wrote.
    """
    pacer: Pacer = run.pacer
    now = time.monotonic()
    elapsed = now - run.started
    alive = sorted(run.alive)
    if len(alive) < 2 or not pacer.due(elapsed):
        return
    done = {d: run.writers[d].sent for d in alive}  # finer than records: slices
    remaining = {d: max(0, run.assigned[d] - done[d]) for d in alive}
    chunk = run.options.chunk
    movable = {d: max(0, remaining[d] - chunk) for d in alive}  # all but the chunk in flight
    if pacer.baseline(elapsed, done):
        return
    busy = {d: None if run.outstanding[d] else run.writers[d].busy_seconds for d in alive}
    rates = pacer.rates(elapsed, done, busy)
    moves = pacer.moves(rates, remaining, movable)
    if not moves:
        return
    ahead = ahead_of_level([remaining[d] for d in alive], [rates[d] for d in alive])
    takers = [d for d, yes in zip(alive, ahead, strict=True) if yes and d not in moves]
    if not takers:
        return
    pieces: list[Piece] = []
    gave: dict[int, int] = {}
    taken_from: dict[int, list[Piece]] = {}
    for d, nbytes in moves.items():
        back = run.writers[d].take_back(nbytes)
        mirror(run.outstanding[d], back)
        moved = sum(p.size for p in back.pieces)
        if moved:
            run.assigned[d] -= moved
            gave[d] = moved
            taken_from[d] = back.pieces
            pieces.extend(back.pieces)
    if not pieces:
        return
    slots = []
    for t in takers:
        free = run.devices[t].space.free
        room = None if free is None else max(0, free - run.assigned[t])
        load = max(0, run.assigned[t] - done[t])
        slots.append(Slot(room=room, load=load, weight=max(rates[t], MIN_RATE)))
    try:
        new = replan(coalesce(pieces), slots, run.options.strategy, run.options.order)
    except PlanError:  # the others have no room: put the work back where it was
        for d, back in taken_from.items():
            run.assign([Item(p.file, p.offset, p.size, d) for p in back])
        return
    items = [Item(i.file, i.offset, i.size, takers[i.device]) for i in new.items]
    for d in gave:
        for item in items:
            url = run.reports[item.device].url
            share = item.size * gave[d] // sum(gave.values())
            run.reports[d].moved[url] = run.reports[d].moved.get(url, 0) + share
    run.assign(items)
    names = ", ".join(run.reports[d].url for d in gave)
    run.on_event(
        Notice(
            f"{names} fell behind its pace; moved {sum(gave.values())} bytes of work "
            f"not yet started to {', '.join(run.reports[t].url for t in takers)}"
        )
    )


def mirror(queue: deque[Item], back: TakeBack) -> None:
    """Apply a writer's ``take_back`` to the engine's view of that writer's queue.

    The engine's deque is the writer's queue plus, at its front, items the writer has
    finished or is writing whose events the engine has not handled yet.
    """
    for _ in range(back.removed):
        queue.pop()
    if back.tail is not None:
        queue[-1] = back.tail
    if back.head is not None:
        old, new = back.head
        for i, item in enumerate(queue):
            if item is old:
                queue[i] = new
                break


def remember_speeds(catalog: Catalog, reports: Sequence[DeviceReport]) -> None:
    """Store each healthy device's measured throughput for later ``--balance time`` runs.

    Only runs that wrote at least ``LEARN_BYTES`` to a device count, so a tiny backup
    does not teach a meaningless rate.
    """
    for r in reports:
        if r.label and r.status == "ok" and r.bytes >= LEARN_BYTES and r.seconds > 0:
            catalog.record_speed(r.label, r.bytes / r.seconds)
