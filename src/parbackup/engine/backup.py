"""The backup run: scan, plan, write all devices at once, fail over, record, finish.

The engine's own thread owns the catalog and the progress sink; device writers only send
it events. A record enters the catalog once its device says it is durable (a checkpoint
or the volume's commit). When a device fails or stops making progress for
``device_timeout`` seconds, everything it had not made durable (queued items, the item in
flight, records written since its last checkpoint) is replanned over the survivors with
the same strategy and order (REQUIREMENTS R1-R4). The set is marked complete (or degraded)
only after every surviving device has committed its volume.

A failed device keeps nothing of the set: even the records it had made durable are taken
out of the catalog and written again elsewhere, so a degraded set never needs the failed
device (a disk that returned EIO, a host that froze) to restore. See docs/FAILURES.md.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Sequence, Set
from datetime import UTC, datetime

from parbackup import __version__
from parbackup.catalog import Catalog
from parbackup.engine import balance
from parbackup.engine.balance import Balance, Pacer, Speed
from parbackup.engine.catalog_copy import copy_catalog
from parbackup.engine.devices import (
    OpenDevice,
    close_all,
    label_devices,
    open_devices,
)
from parbackup.engine.failover import fail_device, reason_of
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.incremental import incremental_reuse
from parbackup.engine.recovery import clean_interrupted, resume_reuse
from parbackup.engine.report import BackupOptions, BackupReport
from parbackup.engine.snapshot import backup_from_snapshot
from parbackup.engine.writer import (
    FINISH,
    STOP,
    Committed,
    DeviceWriter,
    Durable,
    Failed,
    FileError,
    ItemDone,
    Record,
    changed,
)
from parbackup.errors import BackupFailedError
from parbackup.format import CHUNK, new_set_id
from parbackup.model import DeviceReport, FileEntry, Item, Piece, Skipped, Slot
from parbackup.plan import plan
from parbackup.progress import DeviceBytes, DeviceFailed, EventSink, Notice, Started, ignore
from parbackup.sources.incremental import Reuse
from parbackup.sources.remote import close_connections
from parbackup.sources.tree import scan

log = logging.getLogger(__name__)


def pieces_of(entries: Sequence[FileEntry], reused: Set[int] = frozenset()) -> list[Piece]:
    """One piece per entry not ``reused``; dirs, links, empty files are zero-byte pieces."""
    return [Piece(i, 0, e.size) for i, e in enumerate(entries) if i not in reused]


def reserve_for(entries: Sequence[FileEntry], devices: int) -> int:
    """Bytes to keep free on each device for what is not payload.

    Record headers (about 100 bytes plus the path, one per started chunk), the volume
    header and end record, the label and the catalog copy written at the end. Estimated
    generously, so a device with little room is not overfilled.
    """
    headers = sum((100 + len(e.path) + len(e.link)) * (1 + e.size // CHUNK) for e in entries)
    catalog_copy = 64 * 1024 + 300 * len(entries)
    return 64 * 1024 + 2 * headers // max(1, devices) + catalog_copy


def make_plan(
    entries: Sequence[FileEntry],
    devices: Sequence[OpenDevice],
    options: BackupOptions,
    reused: Set[int] = frozenset(),
    speeds: Sequence[Speed] | None = None,
):
    """The plan for ``entries`` (minus ``reused`` ones) over ``devices``, within their room.

    With ``--balance time`` each device's share is proportional to its speed.
    """
    reserve = reserve_for(entries, len(devices))
    rooms = [None if d.space.free is None else max(0, d.space.free - reserve) for d in devices]
    if options.balance is Balance.TIME and speeds:
        slots = [Slot(room=r, weight=s.rate) for r, s in zip(rooms, speeds, strict=True)]
    else:
        slots = [Slot(room=r) for r in rooms]
    with paused_gc():
        return plan(pieces_of(entries, reused), slots, options.strategy, options.order)


class _Run:
    """State of one backup run while its writers are busy."""

    def __init__(
        self,
        entries: list[FileEntry],
        alive: list[OpenDevice],
        catalog: Catalog,
        set_hex: str,
        options: BackupOptions,
        on_event: EventSink,
    ) -> None:
        self.entries, self.catalog, self.set_hex = entries, catalog, set_hex
        self.options, self.on_event = options, on_event
        self.devices = {d.index: d for d in alive}
        self.alive = set(self.devices)
        self.events: queue.Queue = queue.Queue()
        self.outstanding: dict[int, deque[Item]] = {i: deque() for i in self.devices}
        self.head_done = dict.fromkeys(self.devices, 0)
        self.pending: dict[int, list[tuple[int, object]]] = {i: [] for i in self.devices}
        self.kept: dict[int, list[tuple[int, object]]] = {i: [] for i in self.devices}
        self.assigned = dict.fromkeys(self.devices, 0)
        self.last_seen = dict.fromkeys(self.devices, time.monotonic())
        self.finish_sent = dict.fromkeys(self.devices, False)
        # FINISH messages sent and Committed events received, counted: a Committed that
        # answers an earlier FINISH must not mark work assigned after it as committed.
        self.finishes = dict.fromkeys(self.devices, 0)
        self.commits = dict.fromkeys(self.devices, 0)
        self.reports = {
            i: DeviceReport(url=d.url, label=d.label.label) for i, d in self.devices.items()
        }
        self.file_errors: dict[int, str] = {}
        self.writers: dict[int, DeviceWriter] = {}
        self.started = time.monotonic()
        self.pacer: Pacer | None = None

    def start(self, set_id: bytes, meta: dict) -> None:
        for i, dev in self.devices.items():
            writer = DeviceWriter(
                dev,
                set_id,
                self.entries,
                meta,
                self.events,
                chunk=self.options.chunk,
                checkpoint_bytes=self.options.checkpoint_bytes,
                batch=True,
            )
            self.writers[i] = writer
            writer.start()

    def assign(self, items: list[Item]) -> None:
        """Queue items (device numbers are run-wide indexes) on their writers."""
        per_dev: dict[int, list[Item]] = {}
        for item in items:
            per_dev.setdefault(item.device, []).append(item)
        for dev, its in per_dev.items():
            self.outstanding[dev].extend(its)
            self.assigned[dev] += sum(i.size for i in its)
            self.finish_sent[dev] = False
            self.last_seen[dev] = time.monotonic()
            self.writers[dev].add(its)

    # -- the event loop ------------------------------------------------------------------
    def loop(self) -> None:
        while True:
            if not self.alive:
                return
            for dev in sorted(self.alive):
                if not self.outstanding[dev] and not self.finish_sent[dev]:
                    self.finish_sent[dev] = True
                    self.finishes[dev] += 1
                    self.last_seen[dev] = time.monotonic()
                    self.writers[dev].inbox.put(FINISH)
            if all(self._done(d) for d in self.alive):
                return
            try:
                event = self.events.get(timeout=0.25)
            except queue.Empty:
                self._check_hangs()
                if self.pacer is not None:
                    balance.pace(self)
                continue
            for one in event if isinstance(event, list) else (event,):
                self._handle(one)
            self._check_hangs()
            if self.pacer is not None:
                balance.pace(self)

    def _done(self, dev: int) -> bool:
        """The device has written and committed everything assigned to it."""
        return (
            self.finish_sent[dev]
            and not self.outstanding[dev]
            and self.commits[dev] == self.finishes[dev]
        )

    def _handle(self, event: object) -> None:
        dev = event.dev  # type: ignore[attr-defined]
        if dev not in self.alive:
            return  # a device given up for hanging may still speak; ignore it
        self.last_seen[dev] = time.monotonic()
        match event:
            case Record(file=fid, ref=ref):
                self.pending[dev].append((fid, ref))
                self.head_done[dev] += ref.size
                if ref.size:
                    self.reports[dev].bytes += ref.size
                    self.on_event(DeviceBytes(self.reports[dev].url, ref.size))
            case ItemDone():
                self.outstanding[dev].popleft()
                self.head_done[dev] = 0
                self.reports[dev].segments += 1
            case Durable():
                self._make_durable(dev)
            case Committed():
                self._make_durable(dev)
                self.commits[dev] += 1
                self.reports[dev].finished = round(time.monotonic() - self.started, 3)
            case FileError(file=fid, error=error):
                if fid not in self.file_errors:
                    self.file_errors[fid] = error
                    self.on_event(Notice(f"skipped {self.entries[fid].path}: {error}"))
            case Failed(error=error):
                self.fail(dev, error)

    def _make_durable(self, dev: int) -> None:
        if self.pending[dev]:
            self.catalog.add_records(self.set_hex, self.pending[dev])  # type: ignore[arg-type]
            self.kept[dev].extend(self.pending[dev])
            self.pending[dev] = []

    def _check_hangs(self) -> None:
        now = time.monotonic()
        for dev in sorted(self.alive):
            waiting = self.outstanding[dev] or self.commits[dev] != self.finishes[dev]
            seen = max(self.last_seen[dev], self.writers[dev].heartbeat)
            if waiting and now - seen > self.options.device_timeout:
                self.fail(dev, f"no progress for {self.options.device_timeout:g} seconds")

    # -- failover (engine/failover.py) ---------------------------------------------------
    def fail(self, dev: int, error: str) -> None:
        """Give a device up and replan its work over the others (R1-R3)."""
        fail_device(self, dev, error)

    def reserve(self, devices: int) -> int:
        """Room to keep free on each of ``devices`` devices for headers and the catalog."""
        return reserve_for(self.entries, devices)

    def stop(self) -> None:
        for writer in self.writers.values():
            writer.inbox.put(STOP)


def run_backup(
    sources: Sequence[str],
    device_urls: Sequence[str],
    catalog: Catalog,
    options: BackupOptions = BackupOptions(),
    on_event: EventSink = ignore,
) -> BackupReport:
    """Back up ``sources`` onto the devices; record the set in ``catalog``."""
    if options.snapshot or options.pre_command or options.post_command:
        return backup_from_snapshot(run_backup, sources, device_urls, catalog, options, on_event)
    catalog.lock_for_run()  # before labelling: two runs must not label one device twice
    started = time.monotonic()
    skipped: list[Skipped] = []
    with paused_gc():
        entries = scan(
            sources, lambda path, err: skipped.append(Skipped(path, err)), dict(options.read_roots)
        )
    alive, dead = open_devices(
        list(device_urls),
        create_labels=False,
        require_label=False,
        timeout=options.device_timeout,
    )
    run: _Run | None = None
    try:
        sources_abs = sorted({e.source for e in entries})
        reuse = Reuse()
        if options.incremental:
            found = incremental_reuse(catalog, sources_abs, entries, rehash=options.rehash)
            if found is None:
                on_event(Notice("no earlier set of these sources: making a full backup"))
            reuse = found or reuse
        resumed_from = ""
        if not reuse.parent and (resumed := resume_reuse(catalog, sources_abs, entries)):
            reuse = resumed
            resumed_from = resumed.resumed
            on_event(Notice(f"resuming: {resumed.bytes} bytes an interrupted run wrote are reused"))
        first, unlabelled = None, []
        if alive:
            first = make_plan(entries, alive, options, reuse.files)  # refuse what cannot fit
            alive, unlabelled = label_devices(alive, options.device_timeout)
            dead += unlabelled
        for d in dead:
            d.reason = reason_of(d.url, d.reason)
            log.warning("device failed before the backup started: %s: %s", d.url, d.reason)
            on_event(DeviceFailed(d.url, d.reason, 0))
        if not alive:
            raise BackupFailedError(
                "no device could be opened: " + "; ".join(f"{d.url}: {d.reason}" for d in dead)
            )
        speeds = balance.speeds_for(alive, options.balance, catalog.device_speeds())
        if first is not None and not unlabelled and speeds is None:
            the_plan = first  # the same devices and shares: no need to plan twice
        else:
            the_plan = make_plan(entries, alive, options, reuse.files, speeds)
        set_id = new_set_id()
        set_hex = set_id.hex()
        catalog.begin_set(
            set_hex,
            strategy=str(options.strategy),
            order=str(options.order),
            threshold=the_plan.threshold,
            sources=sources_abs,
            kind="incremental" if reuse.parent else "full",
            parent=reuse.parent or None,
            resumed=resumed_from,
        )
        for d in alive:
            catalog.remember_device(d.label.label, d.url, d.device.scheme)
        clean_interrupted(catalog, alive, on_event, {r.origin_set for _, r in reuse.records})
        planned = the_plan.device_bytes()
        on_event(
            Started(
                "backup", len(entries), sum(planned), tuple(d.url for d in alive), tuple(planned)
            )
        )
        run = _Run(entries, alive, catalog, set_hex, options, on_event)
        balance.predict(run, alive, speeds, planned, options.balance)
        meta = {
            "set": set_hex,
            "tool": f"parbackup {__version__}",
            "sources": sources_abs,
            "strategy": str(options.strategy),
            "order": str(options.order),
            "threshold": the_plan.threshold,
            "devices": len(alive),
            "kind": "incremental" if reuse.parent else "full",
        }
        run.start(set_id, meta)
        if all(d.index == n for n, d in enumerate(alive)):
            items = list(the_plan.items)  # plan numbers are already run-wide indexes
        else:
            items = [Item(i.file, i.offset, i.size, alive[i.device].index) for i in the_plan.items]
        error = ""
        try:
            run.assign(items)
            # The writers are busy now; record the files meanwhile (records only reach the
            # catalog from run.loop, after this).
            catalog.add_files(set_hex, enumerate(entries))
            catalog.add_records(set_hex, reuse.records)
            run.loop()
        except BackupFailedError as exc:
            error = str(exc)
            run.alive.clear()
        finally:
            run.stop()
        inconsistent = [
            Skipped(entries[fid].path, err)
            for fid, err in sorted(run.file_errors.items())
            if changed(err)
        ]
        for fid, err in sorted(run.file_errors.items()):
            if not changed(err):
                skipped.append(Skipped(entries[fid].path, err))
        if run.file_errors:
            catalog.mark_files(
                set_hex, [f for f, e in run.file_errors.items() if not changed(e)], "skipped"
            )
            catalog.mark_files(
                set_hex, [f for f, e in run.file_errors.items() if changed(e)], "inconsistent"
            )
        reports = [run.reports[d.index] for d in alive]
        for r, d in zip(reports, alive, strict=True):
            r.seconds = run.writers[d.index].busy_seconds
        now_utc = datetime.now(UTC).isoformat(timespec="seconds")
        reports += [
            DeviceReport(d.url, "", "failed", error=d.reason, failed_at=0.0, failed_utc=now_utc)
            for d in dead
        ]
        reports.sort(key=lambda r: device_urls.index(r.url) if r.url in device_urls else 0)
        if not run.alive:
            status = "failed"
            error = error or "every device failed; nothing was recorded as backed up"
            catalog.drop_records(set_hex)
            catalog.mark_files(set_hex, range(len(entries)), "failed")
            log.error("backup failed: %s", error)
        else:
            status = "degraded" if any(r.status == "failed" for r in reports) else "complete"
        files = len(entries) - len(run.file_errors)
        nbytes = sum(
            e.size
            for i, e in enumerate(entries)
            if i not in run.file_errors and i not in reuse.files
        )
        report = BackupReport(
            set_id=set_hex,
            status=status,
            strategy=str(options.strategy),
            order=str(options.order),
            threshold=the_plan.threshold,
            files=files,
            bytes=nbytes if status != "failed" else 0,
            seconds=time.monotonic() - started,
            devices=reports,
            skipped=skipped,
            error=error,
            kind="incremental" if reuse.parent else "full",
            reused=reuse.bytes if status != "failed" else 0,
            inconsistent=inconsistent,
        )
        catalog.finish_set(
            set_hex,
            status=status,
            files=files,
            nbytes=report.bytes,
            report=report.to_json(),
            devices=reports,
            reused=report.reused,
        )
        balance.remember_speeds(catalog, reports)
        if status != "failed":
            survivors = [d for d in alive if d.index in run.alive]
            copy_catalog(catalog, survivors, on_event, options.device_timeout)
        return report
    finally:
        # Failed devices were closed (or left hanging) in the background already.
        close_all([d for d in alive if run is None or d.index in run.alive], options.device_timeout)
        close_connections()
