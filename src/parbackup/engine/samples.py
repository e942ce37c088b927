"""Per-device progress samples of a backup, kept for ``report`` (bounded in number).

``ProgressSampler`` sits in front of the engine's event sink: it passes every event on
unchanged and notes, per device, how many bytes it had moved at which second of the
run, and when a device failed (with the bytes redirected from it). At most
``MAX_SAMPLES`` points a device are kept: when a device's list is full, every other
point goes (the first and the newest stay) and the spacing doubles, so a run of any
length leaves a few hundred rows per device in the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from parbackup.progress import DeviceBytes, DeviceFailed, Event, EventSink, Started

MAX_SAMPLES = 256
"""Points kept per device and set (failures are kept on top of these)."""
FIRST_SPACING = 0.02
"""Seconds between two kept points of a device at first (doubles as the list fills)."""


@dataclass(frozen=True)
class Sample:
    """Device ``device`` (URL) had moved ``bytes`` at ``seconds`` into the run;
    ``event`` is 'bytes', or 'failed' (then ``redirected`` bytes went to the others)."""

    seconds: float
    device: str
    bytes: int
    event: str = "bytes"
    redirected: int = 0


class ProgressSampler:
    """An event sink that records bounded per-device samples and forwards every event."""

    def __init__(
        self,
        sink: EventSink,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_SAMPLES,
    ) -> None:
        self.sink, self.clock, self.limit = sink, clock, max(limit, 4)
        self.started = clock() if started is None else started
        self.moved: dict[str, int] = {}
        self.points: dict[str, list[Sample]] = {}
        self.spacing: dict[str, float] = {}
        self.failures: list[Sample] = []

    def __call__(self, event: Event) -> None:
        match event:
            case Started(devices=devices):
                for url in devices:
                    self.moved.setdefault(url, 0)
                    self._note(url, force=True)
            case DeviceBytes(device=url, nbytes=n):
                self.moved[url] = self.moved.get(url, 0) + n
                self._note(url)
            case DeviceFailed(device=url, redirected=n):
                self._note(url, force=True)
                self.failures.append(Sample(self._now(), url, self.moved.get(url, 0), "failed", n))
        self.sink(event)

    def _now(self) -> float:
        return round(self.clock() - self.started, 3)

    def _note(self, url: str, *, force: bool = False) -> None:
        points = self.points.setdefault(url, [])
        now = self._now()
        spacing = self.spacing.setdefault(url, FIRST_SPACING)
        point = Sample(now, url, self.moved.get(url, 0))
        if not force and len(points) >= 2 and now - points[-2].seconds < spacing:
            points[-1] = point  # still within the newest slot: its latest count stands
            return
        points.append(point)
        if len(points) > self.limit:
            points[:] = points[:-1:2] + points[-1:]
            self.spacing[url] = spacing * 2

    def finish(self) -> list[Sample]:
        """Every kept sample, each device closed by its final count, in time order."""
        for url in self.moved:
            self._note(url, force=True)
        out = [p for points in self.points.values() for p in points] + self.failures
        return sorted(out, key=lambda s: (s.seconds, s.device, s.event))

    def rows(self) -> list[tuple]:
        """``finish()`` as catalog rows: (seconds, device, bytes, event, redirected)."""
        return [(s.seconds, s.device, s.bytes, s.event, s.redirected) for s in self.finish()]
