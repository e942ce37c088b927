"""The movers of one backup, before and after the dispatcher runs them.

``Fleet.start`` starts one mover per device URL at once (an executor decides where),
so devices open (SSH handshakes, label reads) while the sources are scanned. The
requests around the data path go through the movers too, one conversation each, with a
timeout: ``opened`` (which devices answered, with label and space), ``label`` (write a
label at first use, one device after the other: two URLs may lead to one directory),
``probe`` (a speed probe for ``--balance time``), ``put`` (the catalog copy) and
``stop``. A device that fails or does not answer in time is dead, never waited for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from parbackup.devices.medium import copy_of
from parbackup.devices.registry import open_device
from parbackup.devices.url import redact
from parbackup.engine import messages as m
from parbackup.engine.dispatch import DeviceState, reason_of
from parbackup.engine.movers import MOVER, mover_executor
from parbackup.errors import UsageError
from parbackup.sources.base import SourceSpec
from parbackup.workers import Crashed, Executor, wait_any

START_SECONDS = 60.0
"""How long a mover's process may take to start (before its device's timeout counts)."""


@dataclass
class Dead:
    """A device that could not be used, and why."""

    index: int
    url: str
    reason: str


def _answer(dev: DeviceState, want: tuple[type, ...], timeout: float) -> object:
    """The next message of ``want`` from the device's mover, or a ``Failed``; a
    ``Failed`` when it makes no progress (says nothing at all) for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    channel = dev.worker.channel
    while True:
        left = deadline - time.monotonic()
        if not channel.poll(max(left, 0)):  # past the deadline, still read what came
            return m.Failed(f"no progress for {timeout:g} seconds")
        deadline = time.monotonic() + timeout  # it spoke: a heartbeat at least
        try:
            msg = channel.recv()
        except (EOFError, OSError):
            return m.Failed(dev.worker.why_ended("mover"))
        if isinstance(msg, (*want, m.Failed)):
            return msg
        if isinstance(msg, Crashed):
            return m.Failed(msg.error)


class Fleet:
    """The movers of a run; see the module docstring."""

    def __init__(self, devices: list[DeviceState], timeout: float) -> None:
        self.devices = devices
        self.timeout = timeout
        self.dead: list[Dead] = []

    @classmethod
    def start(
        cls,
        urls: Sequence[str],
        sources: Sequence[SourceSpec],
        *,
        timeout: float,
        chunk: int,
        checkpoint_bytes: int,
        executor: Executor | None = None,
    ) -> Fleet:
        """Start a mover for every URL; UsageError when one is named twice."""
        if len(set(urls)) != len(urls):
            dup = next(u for u in urls if urls.count(u) > 1)
            raise UsageError(f"device named twice: {redact(dup)}")
        # A bad URL or option is a usage error before anything runs; relative paths are
        # made absolute here, so the movers (wherever they run) and the catalog agree.
        parsed = [open_device(url).url for url in urls]
        executor = executor or mover_executor()
        devices = []
        for i, url in enumerate(parsed):
            spec = m.MoverSpec(i, url.raw, tuple(sources), chunk, checkpoint_bytes)
            worker = executor.start(MOVER, spec, name=f"mover-{i}")
            devices.append(DeviceState(i, url.display, worker))
        return cls(devices, timeout)

    @property
    def alive(self) -> list[DeviceState]:
        return [d for d in self.devices if d.alive]

    def bury(self, dev: DeviceState, reason: str) -> None:
        """Give a device up before the data path runs."""
        dev.alive = False
        dev.worker.kill()
        self.dead.append(Dead(dev.index, dev.url, reason_of(dev.url, reason)))

    def opened(self) -> list[DeviceState]:
        """Wait for every mover to open its device, all at once. Each device has
        ``timeout`` seconds from its mover's ``Started``; the process's own start (an
        interpreter and its imports: seconds on a loaded machine) has ``START_SECONDS``,
        so a busy machine does not fail healthy devices. A mover that dies is buried at
        once either way."""
        now = time.monotonic()
        start_limit = max(START_SECONDS, self.timeout)
        waiting = {d.worker.channel: d for d in self.devices}
        deadline = {d.worker.channel: now + start_limit for d in self.devices}
        started: set = set()
        while waiting:
            left = min(deadline[c] for c in waiting) - time.monotonic()
            # past a deadline, still read what came: this process may have been the slow
            # one (stopped, starved of CPU) while its movers started and answered
            ready = wait_any(list(waiting), max(left, 0))
            for channel in ready:
                dev = waiting[channel]
                try:
                    msg = channel.recv()
                except (EOFError, OSError):
                    msg = m.Failed(dev.worker.why_ended("mover"))
                if isinstance(msg, m.Started):
                    started.add(channel)
                    deadline[channel] = time.monotonic() + self.timeout
                    continue
                if isinstance(msg, Crashed):
                    msg = m.Failed(msg.error)
                if isinstance(msg, m.Opened):
                    dev.label, dev.space = msg.label or "", msg.space
                    dev.scheme, dev.sequential = msg.scheme, msg.sequential
                elif isinstance(msg, m.Failed) and msg.usage:
                    raise UsageError(msg.error)
                elif isinstance(msg, m.Failed):
                    self.bury(dev, msg.error)  # type: ignore[attr-defined]
                else:
                    continue  # nothing else is said before Opened: not an answer
                del waiting[channel]
            now = time.monotonic()
            for channel in [c for c in waiting if deadline[c] <= now]:
                dev = waiting.pop(channel)
                if channel in started:
                    self.bury(dev, f"no answer within {self.timeout:g} seconds")
                else:
                    self.bury(dev, f"its mover did not start within {start_limit:g} seconds")
        self._check_unique()
        return self.alive

    def copies_left_out(
        self, alive: list[DeviceState], known: Mapping[str, str]
    ) -> list[DeviceState]:
        """``alive`` less the directories that carry the label of another directory the
        catalog knows (``known``: label -> URL) and that still carries it (a cloned
        disk): written to, the catalog would record the copy for that label and read
        every set of it there, calling the sets only the other holds damaged (found by
        the session-13 hostile tester)."""
        for dev in alive:
            old = known.get(dev.label, "") if dev.label else ""
            if old and old != dev.url and copy_of(old, dev.url, dev.label, self.timeout):
                self.bury(
                    dev,
                    f"carries the label {dev.label} of {old}, which still carries it: one is"
                    " a copy of the other; give the copy a label of its own (empty it) or"
                    " name the device the catalog knows",
                )
        return [d for d in alive if d.alive]

    def label(self) -> list[DeviceState]:
        """Label every live device that has none yet, one after the other."""
        for dev in self.alive:
            if dev.label:
                continue
            dev.worker.send(m.Label())
            msg = _answer(dev, (m.Labelled,), self.timeout)
            if isinstance(msg, m.Labelled):
                dev.label, dev.overwrote = msg.label, msg.overwrote
            else:
                self.bury(dev, msg.error)  # type: ignore[attr-defined]
        self._check_unique()
        return self.alive

    def probe(self, dev: DeviceState) -> float | None:
        """The device's write speed from a short probe; None when it could not probe."""
        dev.worker.send(m.Probe())
        msg = _answer(dev, (m.Speed,), self.timeout)
        return msg.rate if isinstance(msg, m.Speed) else None

    def put(
        self,
        devices: Sequence[DeviceState],
        name: str,
        path: str,
        patch: tuple[int, bytes] = (0, b""),
    ) -> dict[str, str]:
        """Copy a local file onto every device at once (``patch``'s bytes instead of the
        file's at its offset); URL -> error for those that failed."""
        for dev in devices:
            dev.worker.send(m.Put(name, path, patch))
        errors = {}
        for dev in devices:
            msg = _answer(dev, (m.Stored,), self.timeout)
            if isinstance(msg, m.Stored):
                if msg.error:
                    errors[dev.url] = msg.error
            else:
                errors[dev.url] = msg.error  # type: ignore[attr-defined]
                dev.worker.kill()
        return errors

    def stop(self, *, now: bool = False) -> None:
        """End every mover: politely (they close their devices), then for good; ``now``
        (the run was interrupted or failed) kills them at once, whatever they are doing
        (a mover stuck on a hung device must not hold an interrupted program up)."""
        for dev in self.devices:
            if now:
                dev.worker.kill()
            elif dev.worker.alive():
                dev.worker.send(m.Stop())
        deadline = time.monotonic() + min(self.timeout, 30.0)
        for dev in self.devices:  # kill also releases an ended mover's channel
            dev.worker.join(max(0.0, deadline - time.monotonic()))
            dev.worker.kill()

    def _check_unique(self) -> None:
        """UsageError when two URLs lead to the same labelled device."""
        seen: dict[str, str] = {}
        for dev in self.alive:
            if dev.label and dev.label in seen:
                raise UsageError(
                    f"the same device is named twice: {seen[dev.label]} and {dev.url}"
                    f" carry label {dev.label}"
                )
            if dev.label:
                seen[dev.label] = dev.url
