"""Where ``--balance time`` gets each device's speed, and what the run teaches the catalog.

First found wins: ``?speed=RATE`` on the device's URL; what the catalog measured for
its label in earlier backups (used only when it knows every device the URLs leave
open: catalog figures, measured over whole backups, and probe figures, raw large
writes, are not comparable); else a short probe write by the device's mover. A device
whose probe fails is assumed to run at the mean speed of the others ("assumed").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from parbackup.catalog import Catalog
from parbackup.devices.url import parse_size, parse_url
from parbackup.errors import UsageError
from parbackup.model import DeviceReport
from parbackup.plan.pacing import Balance, Pacer, Speed

LEARN_BYTES = 4 << 20
PROBE_MIN_FREE = 64 << 20


def url_speed(url: str) -> float | None:
    """``?speed=RATE`` from a device URL, in bytes per second."""
    value = parse_url(url).params.get("speed")
    if value is None:
        return None
    rate = parse_size(value.removesuffix("/s"))
    if rate <= 0:
        raise UsageError(f"{parse_url(url).display}: speed must be positive")
    return float(rate)


def device_speeds(
    devices: Sequence, known: Mapping[str, float], probe: Callable[[object], float | None]
) -> list[Speed]:
    """The speed of every device (``.url``, ``.label``, ``.space``): see the module doc."""
    hints = [url_speed(d.url) for d in devices]
    learned = all(
        known.get(d.label, 0) > 0 for d, h in zip(devices, hints, strict=True) if h is None
    )
    found: list[Speed | None] = []
    for dev, hint in zip(devices, hints, strict=True):
        if hint is not None:
            found.append(Speed(hint, "url"))
        elif learned:
            found.append(Speed(float(known[dev.label]), "catalog"))
        elif dev.space.free is not None and dev.space.free < PROBE_MIN_FREE:
            found.append(None)
        else:
            rate = probe(dev)
            found.append(None if rate is None else Speed(rate, "probe"))
    rates = [s.rate for s in found if s is not None]
    mean = sum(rates) / len(rates) if rates else 1.0
    return [s if s is not None else Speed(mean, "assumed") for s in found]


def speeds_for(
    devices: Sequence, mode: Balance, known: Mapping[str, float], fleet
) -> list[Speed] | None:
    """Speeds for planning: all of them (probing through the movers) in time mode."""
    if mode is not Balance.TIME:
        return None
    return device_speeds(devices, known, fleet.probe)


def dry_run_speeds(devices: Sequence, known: Mapping[str, float]) -> list[Speed]:
    """Speeds for a dry run: like ``device_speeds`` but never writing a probe."""
    return device_speeds(devices, known, lambda _dev: None)


def predict(
    dispatcher,
    devices: Sequence,
    speeds: Sequence[Speed] | None,
    planned: Sequence[int],
    mode: Balance,
) -> None:
    """Each device's assumed speed and predicted seconds go into its report; a
    time-balanced run gets its pacer."""
    if not speeds:
        return
    for dev, speed, nbytes in zip(devices, speeds, planned, strict=True):
        dev.report.speed = round(speed.rate, 1)
        dev.report.predicted = round(Pacer.finish_estimate(nbytes, speed.rate), 3)
    if mode is Balance.TIME and len(devices) > 1:
        dispatcher.options.pacer = Pacer(
            {d.index: s.rate for d, s in zip(devices, speeds, strict=True)}
        )


def remember_speeds(catalog: Catalog, reports: Sequence[DeviceReport]) -> None:
    """Store each healthy device's measured throughput for later ``--balance time`` runs
    (only runs that wrote at least ``LEARN_BYTES`` to it count)."""
    for r in reports:
        if r.label and r.status == "ok" and r.bytes >= LEARN_BYTES and r.seconds > 0:
            catalog.record_speed(r.label, r.bytes / r.seconds)
