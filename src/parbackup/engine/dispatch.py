"""The dispatcher: one for every kind of backup, one small state object per device.

It holds each device's work (``WorkQueue``: not yet sent; ``Sent``: sent, not yet
durable), feeds its mover in batches within a window, turns the movers' messages into
catalog writes (records go in when their device says they are durable) and progress
events, and decides on failures and lags:

* ``fail(dev, error)`` (REQUIREMENTS R1-R4): a device that failed, or said nothing for
  ``device_timeout`` seconds while it had work, is given up and its mover killed.
  Everything it was given is replanned over the survivors with the same strategy and
  order, counting what each already holds: its queue, what was in flight, and even
  what it had made durable (read back from the catalog, then dropped from it), so a
  degraded set never needs the failed device. A stream's durable records stay where
  they are (their bytes are gone from memory).
* ``pace()`` (``--balance time``): a device that falls behind hands the work it has not
  started to the devices that are ahead (plan/pacing.py decides how much).

Both are methods over the same per-device state; nothing else edits it. The run is
over when every live device has committed everything it was given.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import add

from parbackup.catalog import Catalog
from parbackup.engine import messages as m
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.workqueue import Columns, Sent, Uniform, WorkQueue, gather, rows_of
from parbackup.entries import Entries
from parbackup.errors import BackupFailedError, PlanError
from parbackup.model import DeviceReport, Order, Piece, Plan, Slot, Space, Strategy
from parbackup.plan import coalesce, replan
from parbackup.plan.pacing import MIN_RATE, Pacer, ahead_of_level
from parbackup.progress import DeviceBytes, DeviceFailed, EventSink, Notice
from parbackup.workers import Crashed, Worker, wait_any

log = logging.getLogger(__name__)

WINDOW_BYTES = 64 << 20
"""Bytes sent to a mover and not yet written, at most (plus one item)."""
WINDOW_ITEMS = 4096
BATCH_ITEMS = 1024
BATCH_BYTES = 16 << 20
"""A record reference's size (mover.py's ``pending`` rows)."""
SPLIT = 64 << 20
"""A larger item is sent in parts of this size, so its unread tail can still move."""


@dataclass
class DeviceState:
    """One device of the run, as the dispatcher sees it."""

    index: int
    url: str
    worker: Worker
    label: str = ""
    overwrote: str = ""
    """The label of a medium this device wrote over at labelling (a reused tape)."""
    space: Space = field(default_factory=lambda: Space(None, None))
    scheme: str = ""
    sequential: bool = False
    alive: bool = True
    queue: WorkQueue = field(default_factory=WorkQueue)
    sent: Sent = field(default_factory=Sent)
    assigned: int = 0
    written: int = 0
    busy: float = 0.0
    finishes: int = 0
    commits: int = 0
    finish_upto: int = 0
    committed_upto: int = 0
    last_heard: float = field(default_factory=time.monotonic)
    report: DeviceReport | None = None

    def idle(self) -> bool:
        """Nothing queued and nothing sent that is not yet written."""
        return not self.queue and self.sent.done >= self.sent.next_seq - 1

    def answering(self) -> bool:
        """Whether it owes an answer: items sent and not yet written, or a Finish not
        yet committed. Only that time counts towards ``device_timeout``."""
        return self.sent.done < self.sent.next_seq - 1 or self.finishes != self.commits

    @property
    def can_checkpoint(self) -> bool:
        """Whether its medium makes part of a volume durable (a tape cannot)."""
        return not self.sequential

    def settled(self) -> bool:
        """Everything given to it is written, committed and durable."""
        return (
            self.idle()
            and self.commits > 0
            and self.finishes == self.commits
            and self.committed_upto == self.sent.next_seq - 1
        )


@dataclass
class RunOptions:
    """What the dispatcher needs to know of the backup's options."""

    strategy: Strategy
    order: Order
    device_timeout: float
    chunk: int
    pacer: Pacer | None = None


class Dispatcher:
    """Runs one backup's devices to the end (see the module docstring)."""

    def __init__(
        self,
        devices: Sequence[DeviceState],
        catalog: Catalog,
        set_hex: str,
        entries: Entries,
        options: RunOptions,
        on_event: EventSink,
        reserve: Callable[[int], int],
        feed: StreamFeedLike | None = None,
    ) -> None:
        self.devices = {d.index: d for d in devices}
        self.catalog, self.set_hex, self.entries = catalog, set_hex, entries
        self.options, self.on_event, self.reserve, self.feed = options, on_event, reserve, feed
        self.problems: dict[int, tuple[str, str]] = {}
        """file id -> (error, kind): what the movers said of files they could not store
        as scanned (mover.Problem); "changed" wins over "grew" (a split file)."""
        self.warnings: list[tuple[int, str]] = []
        """(file id, why) of files backed up without their extended attributes, as the
        movers read them (mover.Metas)."""
        self.started = time.monotonic()
        self.stream = feed is not None
        self.uniform = Uniform()
        for d in devices:
            if d.report is None:
                d.report = DeviceReport(url=d.url, label=d.label)

    # -- state ---------------------------------------------------------------------------
    @property
    def alive(self) -> list[DeviceState]:
        return [d for d in self.devices.values() if d.alive]

    def assign(self, plan: Plan, where: Sequence[int]) -> None:
        """Queue a plan's items; plan device ``k`` is run-wide device ``where[k]``.

        Every device's queue takes its rows of the plan's columns (one small array of
        row numbers per device): a million items are not copied, nor made objects.
        """
        rows: dict[int, array] = {}
        for r, dev in enumerate(plan.device):
            got = rows.get(dev)
            if got is None:
                got = rows[dev] = array("I" if len(plan) < 1 << 32 else "q")
            got.append(r)
        for dev, mine in rows.items():
            state = self.devices[where[dev]]
            state.queue.extend(plan.file, plan.offset, plan.size, mine)
            state.assigned += sum(plan.size[r] for r in mine)
            state.report.segments += len(mine)  # type: ignore[union-attr]
            state.last_heard = time.monotonic()

    # -- the loop ------------------------------------------------------------------------
    def run(self, chores: Iterator[None] | None = None) -> None:
        """Until every live device has committed all it was given; BackupFailedError
        when no device is left.

        ``chores`` is other work of the run (recording the files in the catalog), done
        one step at a time between the movers' messages, so the movers never wait for it.
        """
        chores = chores or iter(())
        with paused_gc():  # messages, items and rows make no cycles: ~130 collections
            self._loop(chores)  # of a 67k-file run spared (0.05 s of its CPU)

    def _loop(self, chores: Iterator[None]) -> None:
        busy = True
        while True:
            alive = self.alive
            if not alive:
                raise BackupFailedError("every device failed; nothing was recorded as backed up")
            if self.feed is not None:
                self.feed.step(self)
            for dev in alive:
                self.refill(dev)
            if busy:
                busy = next(chores, StopIteration) is not StopIteration
            feeding = self.feed is not None and not self.feed.ended
            if not busy and not feeding and all(d.settled() for d in alive):
                return
            ready = wait_any([d.worker.channel for d in alive], 0 if busy else 0.25)
            for dev in alive:
                if dev.worker.channel in ready:
                    self.receive(dev)
            self.check_hangs()
            if self.options.pacer is not None:
                self.pace()

    def receive(self, dev: DeviceState) -> None:
        """Handle every message the device's mover has sent so far."""
        try:
            while dev.alive and dev.worker.channel.poll(0):
                self.handle(dev, dev.worker.channel.recv())
        except (EOFError, OSError):
            if dev.alive:
                self.fail(dev, dev.worker.why_ended("mover"))

    def refill(self, dev: DeviceState) -> None:
        """Send more work while the window has room; Finish once everything is sent."""
        if not dev.alive:
            return
        sent = dev.sent
        # Pacing moves only what is not sent yet: keep the window to a few chunks then.
        paced = self.options.pacer is not None
        window = self.options.chunk if paced else WINDOW_BYTES
        split = self.options.chunk if paced else SPLIT
        while dev.queue and sent.undone_bytes < window and sent.undone < WINDOW_ITEMS:
            if not dev.answering():  # it had nothing to do: its silence so far was no
                dev.last_heard = time.monotonic()  # hang (work redirected to it, a stream)
            batch = dev.queue.take_columns(BATCH_ITEMS, min(BATCH_BYTES, window), split)
            dev.worker.send(self.work_items(dev, batch))
        last = sent.next_seq - 1
        uncommitted = last > dev.committed_upto or dev.commits == 0
        if dev.idle() and dev.finishes == dev.commits and uncommitted:
            dev.finishes += 1
            dev.finish_upto = last
            dev.last_heard = time.monotonic()
            dev.worker.send(m.Finish())

    def work_items(self, dev: DeviceState, batch: Columns) -> m.Work:
        """A batch (file ids, offsets, sizes) as the mover takes it: columns
        (messages.Work), never a tuple per item.

        The hot path of a million small files: every column is one ``array(map(...))``
        over the entries' arrays (or, where the whole table holds one value, that value
        repeated: ``Uniform``), the paths one join of slices of their blob
        (``Entries.joined_paths``: a slice per item, the rest C loops; more Python per
        item only when the tree has extended attributes or it is a stream).
        """
        e = self.entries
        fids, offs, sizes = batch
        first = dev.sent.add_columns(fids, offs, sizes)
        links = e.blobs()[3]
        rows, n = rows_of(fids), len(fids)
        feed, same = self.feed, self.uniform.column
        source = same("source", e.source, rows, n)
        paths, path_at = e.joined_paths(fids, source)
        fsize = array("q", map(add, offs, sizes)) if feed is not None else gather(e.size, rows)
        columns = (
            fids, offs, sizes, gather(e.kind, rows), fsize,
            gather(e.mode, rows), same("uid", e.uid, rows, n), same("gid", e.gid, rows, n),
            gather(e.mtime_ns, rows), gather(e.ctime_ns, rows), gather(e.ino, rows),
            same("dev", e.dev, rows, n), source,
        )  # fmt: skip
        if feed is not None:
            data = [feed.data_for(dev, seq, o) for seq, o in enumerate(offs, first)]
            return m.Work(first, columns, paths, path_at, data=data)
        meta = e.meta_bytes if e.has_meta() else None
        return m.Work(
            first,
            columns,
            paths,
            path_at,
            links=list(map(links.get, fids, repeat(b""))) if links else None,
            metas=[meta(f) if o == 0 else b"" for f, o in zip(fids, offs, strict=True)]
            if meta
            else None,
        )

    def handle(self, dev: DeviceState, msg: object) -> None:
        dev.last_heard = time.monotonic()
        report = dev.report
        assert report is not None
        match msg:
            case m.Progress(sent=sent, done=done, busy=busy):
                if sent > dev.written:
                    self.on_event(DeviceBytes(dev.url, sent - dev.written))
                dev.written, dev.busy = sent, busy
                dev.sent.mark_done(done)
                if self.feed is not None and not dev.can_checkpoint:
                    self.feed.written(dev, done)
            case m.Durable(upto=upto, columns=columns):
                self.catalog.add_record_columns(self.set_hex, dev.label, columns)
                report.bytes += sum(msg.sizes)
                dev.sent.retire(upto)
                if self.feed is not None:
                    self.feed.durable(dev, upto)
            case m.Metas(rows=rows):
                self.catalog.add_file_metas(self.set_hex, [(f, p) for f, p, _ in rows if p])
                self.warnings += [(f, why) for f, _, why in rows if why]
            case m.Committed():
                dev.commits += 1
                dev.committed_upto = dev.finish_upto
                report.finished = round(time.monotonic() - self.started, 3)
            case m.Problem(file=fid, error=error, kind=kind):
                known = self.problems.get(fid)
                if known is None or (known[1] == "grew" and kind != "grew"):
                    self.problems[fid] = (error, kind)
                    what = {"changed": "changed while read", "grew": "grew while read"}
                    label = what.get(kind, "skipped")
                    self.on_event(Notice(f"{label}: {self.entries.path(fid)}: {error}"))
            case m.Failed(error=error):
                self.fail(dev, error)
            case Crashed(error=error):
                self.fail(dev, error)

    def check_hangs(self) -> None:
        """Fail every device that owes an answer and said nothing for ``device_timeout``
        seconds. Its channel is read first: only the devices that were ready at the last
        wait were, and what another sent while the dispatcher handled theirs (a catalog
        write, an fsync on a busy disk) is its word, not its silence."""
        limit = self.options.device_timeout
        for dev in self.alive:
            if not self.silent(dev, limit):
                continue
            self.receive(dev)
            if dev.alive and self.silent(dev, limit):
                self.fail(dev, f"no progress for {limit:g} seconds")

    @staticmethod
    def silent(dev: DeviceState, limit: float) -> bool:
        """Whether it owes an answer and said nothing for over ``limit`` seconds since it
        was last heard, or since its last message reached it (a ``Work`` still being
        sent is not yet owed)."""
        since = max(dev.last_heard, dev.worker.delivered())
        return dev.answering() and time.monotonic() - since > limit

    # -- failover (R1-R4) ----------------------------------------------------------------
    def fail(self, dev: DeviceState, error: str) -> None:
        """Give a device up and replan everything it was given (see the module doc)."""
        dev.alive = False
        dev.worker.kill()
        report = dev.report
        assert report is not None
        error = reason_of(dev.url, error)
        report.status, report.error = "failed", error
        report.failed_at = round(time.monotonic() - self.started, 3)
        report.failed_utc = datetime.now(UTC).isoformat(timespec="seconds")
        for other in self.alive:  # movers that end with it (their fork server killed):
            if not other.worker.alive():  # their last words, then their end, first, so
                self.receive(other)  # nothing is redirected to a device already gone
                if other.alive:  # ending, its channel not closed yet
                    self.fail(other, other.worker.why_ended("mover"))
        lost = dev.queue.drain() + dev.sent.pieces()
        if self.feed is not None:
            lost_before = self.feed.lost_bytes  # segments already let go are lost, and
            self.feed.fail(self, dev, lost)  # reported as such, never as redirected
            redirected = sum(p.size for p in lost) - (self.feed.lost_bytes - lost_before)
            self.on_event(DeviceFailed(dev.url, error, redirected if self.alive else 0))
            return
        durable = self.catalog.records_on(self.set_hex, dev.label) if dev.label else []
        lost += [Piece(fid, off, size) for fid, off, size in durable]
        if durable:
            self.catalog.drop_records(self.set_hex, dev.label)
        report.bytes, report.segments = 0, 0
        dropped = {f for f, (_e, kind) in self.problems.items() if kind != "grew"}
        lost = coalesce(p for p in lost if p.file not in dropped)
        redirected = sum(p.size for p in lost)
        log.warning("device failed: %s: %s (%d bytes to redirect)", dev.url, error, redirected)
        survivors = self.alive
        if not survivors or not lost:  # nobody to take it (the run fails) or nothing to take
            self.on_event(DeviceFailed(dev.url, error, 0))
            return
        slots = self.survivor_slots(survivors)
        try:
            new = replan(lost, slots, self.options.strategy, self.options.order)
        except PlanError as exc:
            self.on_event(DeviceFailed(dev.url, error, 0))
            raise BackupFailedError(
                f"{dev.url} failed ({error}) and the other devices cannot take its "
                f"{redirected} bytes: {exc}"
            ) from exc
        self.on_event(DeviceFailed(dev.url, error, redirected))
        self.assign(new, [s.index for s in survivors])
        for k, size in enumerate(new.device_bytes()):
            if size:
                url = survivors[k].url
                report.redirected[url] = report.redirected.get(url, 0) + size

    def survivor_slots(self, survivors: list[DeviceState]) -> list:
        """The survivors as a replan sees them (R3): their room, what they already hold,
        and (balancing time) their observed rates as weights."""
        reserve = self.reserve(len(survivors))
        rates = self.rates(survivors) if self.options.pacer is not None else {}
        slots = []
        for s in survivors:
            free = s.space.free
            room = None if free is None else max(0, free - reserve - s.assigned)
            if s.index in rates:
                load = max(0, s.assigned - s.written)
                slots.append(Slot(room=room, load=load, weight=max(rates[s.index], MIN_RATE)))
            else:
                slots.append(Slot(room=room, load=s.assigned))
        return slots

    # -- pacing (--balance time) ---------------------------------------------------------
    def rates(self, devices: list[DeviceState]) -> dict[int, float]:
        pacer = self.options.pacer
        assert pacer is not None
        done = {d.index: d.written for d in devices}
        busy = {d.index: None if not d.idle() else d.busy for d in devices}
        return pacer.rates(time.monotonic() - self.started, done, busy)

    def pace(self) -> None:
        """Move not-started work off devices that fell behind onto those ahead."""
        pacer = self.options.pacer
        assert pacer is not None
        alive = self.alive
        elapsed = time.monotonic() - self.started
        if len(alive) < 2 or not pacer.due(elapsed):
            return
        done = {d.index: d.written for d in alive}
        if pacer.baseline(elapsed, done):
            return
        remaining = {d.index: max(0, d.assigned - d.written) for d in alive}
        movable = {d.index: d.queue.bytes for d in alive}
        rates = self.rates(alive)
        moves = pacer.moves(rates, remaining, movable)
        if not moves:
            return
        ahead = ahead_of_level([remaining[d.index] for d in alive], [rates[d.index] for d in alive])
        takers = [d for d, yes in zip(alive, ahead, strict=True) if yes and d.index not in moves]
        if not takers:
            return
        pieces: list[Piece] = []
        gave: dict[int, list[Piece]] = {}
        for index, nbytes in moves.items():
            back = self.devices[index].queue.take_back(nbytes, self.options.chunk)
            if back:
                self.devices[index].assigned -= sum(p.size for p in back)
                gave[index] = back
                pieces.extend(back)
        if not pieces:
            return
        slots = []
        for t in takers:
            free = t.space.free
            room = None if free is None else max(0, free - t.assigned)
            load = max(0, t.assigned - t.written)
            slots.append(Slot(room=room, load=load, weight=max(rates[t.index], MIN_RATE)))
        try:
            new = replan(coalesce(pieces), slots, self.options.strategy, self.options.order)
        except PlanError:  # the others have no room: the work stays where it was
            for index, back in gave.items():
                dev = self.devices[index]
                dev.queue.extend(
                    [p.file for p in back], [p.offset for p in back], [p.size for p in back]
                )
                dev.assigned += sum(p.size for p in back)
            return
        self.assign(new, [t.index for t in takers])
        total = sum(p.size for p in pieces)
        for index, back in gave.items():
            amount = sum(p.size for p in back)
            report = self.devices[index].report
            assert report is not None
            for k, size in enumerate(new.device_bytes()):
                url = takers[k].url
                report.moved[url] = report.moved.get(url, 0) + size * amount // total
        names = ", ".join(self.devices[i].url for i in gave)
        self.on_event(
            Notice(
                f"{names} fell behind its pace; moved {total} bytes of work not yet started "
                f"to {', '.join(t.url for t in takers)}"
            )
        )


class StreamFeedLike:
    """What the dispatcher asks of a stream feed (engine/feed.py implements it)."""

    ended: bool
    lost_bytes: int

    def step(self, dispatcher: Dispatcher) -> None: ...
    def data_for(self, dev: DeviceState, seq: int, offset: int) -> bytes: ...
    def written(self, dev: DeviceState, upto: int) -> None: ...
    def durable(self, dev: DeviceState, upto: int) -> None: ...
    def fail(self, dispatcher: Dispatcher, dev: DeviceState, pieces: list[Piece]) -> None: ...


def reason_of(url: str, error: str) -> str:
    """The error without the device URL in front (the report names the device already)."""
    return error.removeprefix(f"{url}: ")
