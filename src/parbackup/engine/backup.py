"""The backup run: scan, plan, dispatch to the movers, finish.

1. Movers start at once, one per device (engine/fleet.py), and open their devices while
   the sources are scanned into a columnar table (sources/).
2. Incremental and resume reuse are decided (plan/reuse.py), then the pure planner places
   the rest within every device's room; nothing is written when it cannot fit.
3. Devices are labelled, the set begins, and the dispatcher (engine/dispatch.py) runs
   the movers to the end, failing devices over and pacing them as needed. A stream
   (standard input) runs through the same dispatcher, fed segment by segment.
4. The set is marked complete (or degraded) only after every surviving device has
   committed its volume; then the catalog is copied onto every surviving device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence, Set
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO

from parbackup import __version__, scratch
from parbackup.catalog import Catalog, is_catalog_url
from parbackup.catalog.liveness import RESTORABLE
from parbackup.devices.medium import check_catalog_place, check_distinct
from parbackup.engine import messages as m
from parbackup.engine.catalog_copy import CATALOG_COPY, catalog_copies
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.engine.dispatch import DeviceState, Dispatcher, RunOptions
from parbackup.engine.feed import SEGMENT, StreamFeed
from parbackup.engine.fleet import Fleet
from parbackup.engine.movers import scan_helpers
from parbackup.engine.outcome import Outcome, device_reports, mark_problems, mark_stream
from parbackup.engine.prepare import (
    SourceHosts,
    hosts_of,
    make_plan,
    place_sources,
    reserve_for,
    scan,
    source_specs,
)
from parbackup.engine.recovery import clean_interrupted
from parbackup.engine.report import BackupOptions, BackupReport
from parbackup.engine.reusing import earlier_reuse
from parbackup.engine.samples import ProgressSampler
from parbackup.engine.selecting import (
    automatic_excludes,
    inside_remote,
    selecting,
    with_automatic,
)
from parbackup.engine.snapshot import backup_from_snapshot, release_leftovers
from parbackup.engine.speeds import predict, remember_speeds, speeds_for
from parbackup.entries import Entries
from parbackup.errors import BackupFailedError
from parbackup.format import new_set_id
from parbackup.model import Skipped
from parbackup.plan.reuse import Reuse
from parbackup.progress import DeviceFailed, EventSink, Notice, Started, ignore
from parbackup.selection import Excluded
from parbackup.sources.base import SourceSpec
from parbackup.sources.registry import exact_sources, open_source
from parbackup.sources.stdin import StdinSource
from parbackup.workers import Executor

if TYPE_CHECKING:
    from parbackup.engine.parity import ParityStream

log = logging.getLogger(__name__)
_FILE_BATCH = 16384


def run_backup(
    sources: Sequence[str],
    device_urls: Sequence[str],
    catalog: Catalog,
    options: BackupOptions = BackupOptions(),
    on_event: EventSink = ignore,
    *,
    stdin: BinaryIO | None = None,
    stdin_name: str = "",
    executor: Executor | None = None,
) -> BackupReport:
    """Back up ``sources`` onto the devices; record the set in ``catalog``.

    A source ``-`` is the stream ``stdin`` (default: this process's standard input),
    recorded as ``/<stdin_name>``; it must be the only source.
    """
    check_distinct(list(device_urls), options.device_timeout)  # data and parity alike
    local = "" if is_catalog_url(catalog.path) else catalog.path
    check_catalog_place(list(device_urls), local, options.device_timeout)
    if options.snapshot or options.pre_command or options.post_command:
        return backup_from_snapshot(run_backup, sources, device_urls, catalog, options, on_event)
    catalog.lock_for_run()  # before labelling: two runs must not label one device twice
    release_leftovers(catalog, lambda text: on_event(Notice(text)))  # of killed runs
    started = time.monotonic()
    specs = source_specs(sources, options.read_roots, stdin_name)
    automatic = automatic_excludes(specs, device_urls, catalog.path)
    select = with_automatic(options.select, automatic, on_event)
    for spec in specs:
        if options.select and spec.kind not in ("tree", "stdin"):
            on_event(Notice(f"{spec.display}: selection options apply to local trees only"))
    specs = selecting(specs, select, options.xattrs)
    specs = inside_remote(specs, device_urls, on_event)
    specs = place_sources(specs, hosts_of(executor))
    parity_urls: list[str] = []
    if options.parity > 0:  # ISA-L, the collector and its tees: loaded by parity runs only
        from parbackup.engine.parity import ParityStream, finish_parity, split_devices

        device_urls, parity_urls = split_devices(device_urls, options.parity)
    fleet = Fleet.start(
        list(device_urls),
        specs,
        timeout=options.device_timeout,
        chunk=options.chunk,
        checkpoint_bytes=options.checkpoint_bytes,
        executor=executor,
    )
    stream = None
    try:
        if parity_urls:
            stream = ParityStream.start(
                parity_urls, executor, options.device_timeout, columns=len(device_urls)
            )
        backup = _Backup(specs, fleet, catalog, options, on_event, started, stdin)
        backup.parity = stream
        backup.hosts = hosts_of(executor)
        backup.helpers = scan_helpers(executor)
        report = backup.run()
    except BaseException:  # interrupted, or failed: the movers' work is given up
        fleet.stop(now=True)
        if stream is not None:
            stream.worker.kill()
        raise
    fleet.stop()
    if parity_urls and report.status != "failed":
        # after the movers closed their devices: a tape is read back only once it ends
        data = [(d.label, d.url) for d in report.devices if d.status == "ok"]
        report.parity = finish_parity(
            stream,
            catalog,
            report.set_id,
            data,
            parity_urls,
            codec=options.codec,
            key_file=options.key_file,
        )
        if "error" in report.parity:
            on_event(Notice(report.parity["error"]))
        report.seconds = time.monotonic() - started
    elif stream is not None:
        stream.abandon()
    return report


def run_stream_backup(
    stream: BinaryIO,
    name: str,
    device_urls: Sequence[str],
    catalog: Catalog,
    options: BackupOptions | None = None,
    on_event: EventSink = ignore,
    *,
    segment: int = SEGMENT,
    buffers: int = 0,
) -> BackupReport:
    """Back up ``stream`` as the file ``/name`` onto the devices (``backup -``)."""
    options = replace(options or BackupOptions(), stream_buffers=buffers, stream_segment=segment)
    return run_backup(["-"], device_urls, catalog, options, on_event, stdin=stream, stdin_name=name)


class _Backup:
    """One run, from the scan to the catalog copy."""

    def __init__(self, specs, fleet, catalog, options, on_event, started, stdin) -> None:
        self.specs: list[SourceSpec] = specs
        self.fleet: Fleet = fleet
        self.catalog: Catalog = catalog
        self.options: BackupOptions = options
        self.samples = ProgressSampler(on_event, started)  # for `report` (engine/samples.py)
        self.on_event: EventSink = self.samples
        self.started = started
        self.stream = bool(specs) and specs[0].kind == "stdin"
        self.stdin = stdin
        self.skipped: list[Skipped] = []
        self.excluded = Excluded()
        self.resumed_from = ""
        self.parity: ParityStream | None = None
        """With ``--parity`` on local movers: the parity written while the data is."""
        self.hosts: SourceHosts | None = None
        self.helpers: Executor | None = None
        """Where the split scan starts its helper (engine/movers.py ``scan_helpers``)."""
        self.urls: dict[str, str] = {}
        """Label -> URL of the devices that opened for this run."""
        self.lacking: list[Skipped] = []
        """Volumes of earlier sets the catalog lists but their devices no longer hold."""

    def run(self) -> BackupReport:
        options, catalog = self.options, self.catalog
        self.phase("movers started")
        entries = scan(
            self.specs, self.skipped, self.stdin, self.excluded, self.hosts, self.helpers
        )
        self.phase(f"scanned {len(entries)} entries")
        names = sorted(s.display for s in self.specs)
        alive = self.fleet.copies_left_out(self.fleet.opened(), self.catalog.device_urls())
        self.phase(f"{len(alive)} device(s) open")
        usable = {d.label for d in alive if d.label}  # reuse only what this run can reach
        self.urls = {d.label: d.url for d in alive if d.label}
        reuse = Reuse() if self.stream else self.reuse(names, entries, usable)
        for fid, payload in reuse.metas.items():  # read by no mover: the earlier set's
            entries.set_meta(fid, payload)
        first = None
        if alive and not self.stream:  # refuse what cannot fit before writing anything
            first = make_plan(entries, [d.space for d in alive], options, reuse.files)
        alive = self.fleet.label() if alive else alive
        self.phase("planned and labelled")
        for d in alive:
            if d.overwrote:
                self.lost_medium(d.url, d.overwrote)
        for d in self.fleet.dead:
            log.warning("device failed before the backup started: %s: %s", d.url, d.reason)
            self.on_event(DeviceFailed(d.url, d.reason, 0))
        if not alive:
            reasons = "; ".join(f"{d.url}: {d.reason}" for d in self.fleet.dead)
            raise BackupFailedError("no device could be opened: " + reasons)
        speeds = None
        if not self.stream:
            speeds = speeds_for(alive, options.balance, catalog.device_speeds(), self.fleet)
            same = first is not None and len(first.shares) == len(alive) and speeds is None
            the_plan = (
                first
                if same
                else make_plan(entries, [d.space for d in alive], options, reuse.files, speeds)
            )
        set_id = new_set_id()
        set_hex = set_id.hex()
        kind = "incremental" if reuse.parent else "full"
        threshold = self.threshold = options.stream_segment if self.stream else the_plan.threshold
        catalog.begin_set(
            set_hex,
            strategy="stream" if self.stream else str(options.strategy),
            order=str(options.order),
            threshold=threshold,
            sources=names,
            kind=kind,
            parent=reuse.parent or None,
            resumed=self.resumed_from,
            created=options.created or None,
        )
        if not options.xattrs:
            catalog.set_without_xattrs(set_hex)
        for d in alive:
            catalog.remember_device(d.label, d.url, d.scheme)
        if any(s.status in ("interrupted", "failed", "forgotten") for s in catalog.sets()):
            self.clean(alive, reuse)
        meta = {
            "set": set_hex,
            "tool": f"parbackup {__version__}",
            "sources": names,
            "strategy": "stream" if self.stream else str(options.strategy),
            "order": str(options.order),
            "threshold": threshold,
            "devices": len(alive),
            "kind": kind,
            **({} if options.xattrs else {"xattrs": False}),  # rebuild-catalog keeps it
        }
        links = self.parity.begin(set_id, [d.label for d in alive], catalog) if self.parity else []
        for j, d in enumerate(alive):
            d.worker.send(m.Begin(set_id, meta, options.codec, links[j] if links else None))
        run_options = RunOptions(
            options.strategy, options.order, options.device_timeout, options.chunk
        )
        feed = None
        if self.stream:
            reader = StdinSource(self.specs[0], self.stdin).open(entries.path(0))
            feed = StreamFeed(reader, options.stream_segment, options.stream_buffers)
        dispatcher = Dispatcher(
            alive,
            catalog,
            set_hex,
            entries,
            run_options,
            self.on_event,
            lambda n: reserve_for(entries, n),
            feed,
        )
        planned = [0] * len(alive) if self.stream else the_plan.device_bytes()
        if not self.stream:
            predict(dispatcher, alive, speeds, planned, options.balance)
            dispatcher.assign(the_plan, [d.index for d in alive])
            first = the_plan = None  # the queues hold the work now: let the plan go
        self.on_event(
            Started(
                "backup", len(entries), sum(planned), tuple(d.url for d in alive), tuple(planned)
            )
        )
        outcome = Outcome(skipped=list(self.skipped))
        # Reused records go in before any device can fail: a failure reads back what
        # its device holds for the set from the catalog, reused records included.
        catalog.add_records(set_hex, reuse.records)
        self.phase("set begun")
        try:
            dispatcher.run(self.record_files(set_hex, entries))
            self.phase("every device committed")
        except BackupFailedError as exc:
            outcome.error = str(exc)
            for d in alive:
                d.alive = False
        return self.finish(set_hex, entries, dispatcher, reuse, outcome, feed)

    def lost_medium(self, url: str, label: str) -> None:
        """``url`` was a tape that held ``label`` and is now written over: the sets with
        a record on it can no longer be restored whole, so the catalog stops calling
        them restorable (they become 'forgotten'; what they left on other devices goes
        at the next prune) and forgets the old label."""
        catalog = self.catalog
        sets = catalog.sets()
        lost = {s.id for s in sets if s.status in RESTORABLE and catalog.records_on(s.id, label)}
        if lost:
            gone = catalog.mark_forgotten(lost)
            self.on_event(
                Notice(
                    f"{url}: this tape held {len(gone)} restorable set(s) ({', '.join(gone)});"
                    " it is being written over, so they are forgotten"
                )
            )
        catalog.forget_device(label)

    def phase(self, what: str) -> None:
        """Log how far the run is, seconds since it started, and this process's CPU
        seconds so far, imports included (``-vv`` shows them)."""
        cpu = time.process_time()
        log.debug("%.3f s (CPU %.3f s): %s", time.monotonic() - self.started, cpu, what)

    def record_files(self, set_hex: str, entries: Entries) -> Iterator[None]:
        """The set's files into the catalog, a batch per step (the dispatcher runs the
        steps between the movers' messages)."""
        for start in range(0, len(entries), _FILE_BATCH):
            self.catalog.add_entries(
                set_hex, entries, range(start, start + _FILE_BATCH)[: len(entries) - start]
            )
            yield

    def reuse(self, names: list[str], entries: Entries, usable: Set[str]) -> Reuse:
        """What earlier sets already hold (``engine/reusing.py``), on the devices with
        labels ``usable`` only (those that opened for this run)."""
        self._entries = entries
        found = earlier_reuse(
            self.catalog, names, entries, usable, self.urls, self.options,
            self.rehash_opener(), self.on_event, exact_sources(self.specs),
        )  # fmt: skip
        self.resumed_from = found.resumed_from
        self.lacking += found.lacking
        return found.reuse

    def rehash_opener(self):
        """For ``--rehash``: open an entry's file through its source."""
        if not self.options.rehash:
            return None
        sources = {}

        def opener(fid: int):
            index = self._entries.source[fid]
            src = sources.get(index) or sources.setdefault(index, open_source(self.specs[index]))
            return src.open(self._entries.path(fid))

        return opener

    def clean(self, alive: list[DeviceState], reuse: Reuse) -> None:
        """Delete what runs that died left on these devices (engine/recovery.py). A tape
        is not opened: its mover holds it locked, writing it anew (nothing to delete)."""
        tapes = {d.label for d in alive if d.label in self.catalog.tape_labels()}
        disks = {d.label: d.url for d in alive if d.label not in tapes}
        opened, _missing = devices_for_labels(disks, [], write=True)
        try:
            keep = {r.origin_set for _, r in reuse.records}
            clean_interrupted(self.catalog, list(opened.values()), self.on_event, keep, tapes)
        finally:
            close_all(list(opened.values()))

    def finish(self, set_hex, entries, dispatcher, reuse, outcome, feed) -> BackupReport:
        catalog, options = self.catalog, self.options
        problems = mark_problems(catalog, set_hex, entries, dispatcher, outcome)
        reports = device_reports(self.fleet)
        survivors = [d for d in dispatcher.devices.values() if d.alive]
        # the few files left out, subtracted: no Python loop over a million entries here
        nbytes = entries.total_bytes() - entries.total_bytes(set(problems) | reuse.files)
        if feed is not None:
            nbytes = feed.total
            mark_stream(catalog, set_hex, entries, feed, outcome)
        lost_stream = feed is not None and feed.lost_bytes > 0
        if not survivors or lost_stream:  # a stream not stored whole: nothing of it counts
            status = "failed"
            outcome.error = outcome.error or (
                f"the stream was not stored whole ({feed.lost_bytes} bytes lost with"
                f" {feed.lost_with}); nothing was recorded as backed up"
                if lost_stream and feed is not None
                else "every device failed; nothing was recorded as backed up"
            )
            catalog.drop_records(set_hex)
            catalog.mark_files(set_hex, range(len(entries)), "failed")
            log.error("backup failed: %s", outcome.error)
        else:
            status = "degraded" if any(r.status == "failed" for r in reports) else "complete"
        reused = reuse.bytes
        if reuse.records and status == "degraded":
            # a failed device's reused records were copied again (Dispatcher.fail): only
            # what the set still takes from earlier sets counts as reused
            reused = sum(r.size for _f, r in catalog.records(set_hex) if r.origin_set)
            nbytes += reuse.bytes - reused
        lost_files = len(problems) + (1 if feed is not None and feed.lost_bytes else 0)
        lost_lock = catalog.run_lock.lost()
        if lost_lock:  # a warning of the run (exit 3), under -q and in --json too
            log.warning("%s", lost_lock)
            outcome.error = f"{outcome.error}; {lost_lock}" if outcome.error else lost_lock
        report = BackupReport(
            set_id=set_hex,
            status=status,
            strategy="stream" if feed is not None else str(options.strategy),
            order=str(options.order),
            threshold=self.threshold,
            files=len(entries) - lost_files if status != "failed" else 0,
            bytes=nbytes if status != "failed" and not (feed and feed.lost_bytes) else 0,
            seconds=time.monotonic() - self.started,
            devices=reports,
            skipped=outcome.skipped,
            error=outcome.error,
            kind="incremental" if reuse.parent else "full",
            reused=reused if status != "failed" else 0,
            inconsistent=outcome.inconsistent,
            grown=outcome.grown,
            excluded=dict(self.excluded.counts),
            lacking=self.lacking,
        )
        self.phase("report made")
        catalog.add_progress(set_hex, self.samples.rows())
        catalog.finish_set(
            set_hex,
            status=status,
            files=report.files,
            nbytes=report.bytes,
            report=report.to_json(),
            devices=reports,
            reused=report.reused,
        )
        remember_speeds(catalog, reports)
        self.phase(f"set {status}")
        if status != "failed":
            if self.parity is not None:  # recorded first: the one catalog copy holds it
                data = [(r.label, r.url) for r in reports if r.status == "ok"]
                self.parity.close(catalog, set_hex, data)
                self.phase("parity recorded")
            self.copy_catalog(survivors)
            self.phase("catalog copied")
        return report

    def copy_catalog(self, devices: list[DeviceState]) -> None:
        """Put a copy of the catalog on every surviving device at once (X2): read from
        the catalog file itself when it can be held still (``Catalog.frozen_file``),
        else from a copy made in scratch room (always for a sealed one, and on a cluster,
        whose given-up movers may not end at once: one must not read on after the file
        moves again, and with --parity, whose devices take the same scratch copy)."""
        options = self.options
        plain = options.codec is None or not options.codec.encrypted
        if self.hosts is None and self.parity is None and plain:
            with self.catalog.frozen_file() as frozen:
                if frozen is not None:
                    scratch.sweep()  # what killed commands left, as a scratch copy did
                    path, patch = frozen
                    self.phase(f"{CATALOG_COPY} held still")
                    for url, error in self.fleet.put(devices, CATALOG_COPY, path, patch).items():
                        self.on_event(Notice(f"could not copy the catalog to {url}: {error}"))
                    return
        with scratch.directory() as tmp:
            files = catalog_copies(self.catalog, tmp, options.codec, options.key_file)
            parity = self.parity if self.parity is not None and self.parity.closed else None
            if parity is not None:  # the parity devices take the same copy meanwhile
                parity.put_copies(files)
            for name, path in files:
                self.phase(f"{name} made")
                what = "the catalog" if name.startswith("catalog/") else f"the key file {name}"
                for url, error in self.fleet.put(devices, name, path).items():
                    self.on_event(Notice(f"could not copy {what} to {url}: {error}"))
            if parity is not None:
                parity.copies_stored()
