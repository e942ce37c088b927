"""Backing up a stream of unknown length (standard input) and restoring a file to a stream.

Backup (REQUIREMENTS F2, W3): the stream is cut into fixed-size segments as it arrives;
each goes to the device that is least filled at that moment (P5) among those with room,
so all devices are written at once while the stream is read. At most ``buffers``
segments are held in memory: a segment's buffer is reused once its device has made it
durable (a checkpoint after every segment), so memory stays bounded whatever the length.
When a device fails, the segments it had not made durable are written again on the
others (R2); only bytes a device had taken without being able to make them durable
(kinds without checkpoints) can be lost, and then the stream is reported damaged, never
stored silently as good.

The stream's size is known only at its end: every record header carries as file size the
end of its own segment (a lower bound; the last segment's records carry the true size),
and the catalog gets the true size when the stream ends. The set's threshold is the
segment size.

Restore to a stream: one file's records are read in offset order, one reader thread per
device and a bounded window of reads in flight, checked, and written out in order.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from parbackup import __version__
from parbackup.catalog import Catalog
from parbackup.engine.catalog_copy import copy_catalog
from parbackup.engine.devices import close_all, label_devices, open_devices
from parbackup.engine.report import BackupOptions, BackupReport
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
)
from parbackup.errors import BackupFailedError
from parbackup.format import new_set_id
from parbackup.model import DeviceReport, FileEntry, Item, Kind, RecordRef, Skipped
from parbackup.progress import DeviceBytes, DeviceFailed, EventSink, Started, ignore

SEGMENT = 8 << 20
"""Bytes of the stream per segment (one item of one device)."""


class StreamWriter(DeviceWriter):
    """A device writer whose bytes come from memory segments instead of a source file."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, checkpoint_bytes=1 << 62, **kwargs)
        self.segments: dict[int, memoryview] = {}

    def _copy_range(self, item: Item, entry: FileEntry) -> None:
        data = self.segments.pop(item.offset)
        known = replace(entry, size=item.offset + item.size)
        for at in range(0, item.size, self.chunk):
            self._emit_record(item, known, item.offset + at, data[at : at + self.chunk])
        assert self.volume is not None
        if self.volume.checkpoint():
            self.since_checkpoint = 0
            self.events.put(Durable(self.dev.index))


@dataclass
class _Segment:
    offset: int
    size: int
    buffer: bytearray


class _StreamRun:
    """State of one stream backup: segments in flight per device, buffers, failover."""

    def __init__(
        self,
        alive: list,
        catalog: Catalog,
        set_hex: str,
        options: BackupOptions,
        on_event: EventSink,
        entries: list[FileEntry],
    ) -> None:
        self.catalog, self.set_hex, self.options, self.on_event = (
            catalog,
            set_hex,
            options,
            on_event,
        )
        self.entries = entries
        self.devices = {d.index: d for d in alive}
        self.alive = set(self.devices)
        self.events: queue.Queue = queue.Queue()
        self.writers: dict[int, StreamWriter] = {}
        self.outstanding: dict[int, deque[_Segment]] = {i: deque() for i in self.devices}
        self.undurable: dict[int, int] = dict.fromkeys(self.devices, 0)
        self.durable_flag = dict.fromkeys(self.devices, False)
        self.pending: dict[int, list[tuple[int, RecordRef]]] = {i: [] for i in self.devices}
        self.assigned = dict.fromkeys(self.devices, 0)
        self.finish_sent = dict.fromkeys(self.devices, False)
        # FINISH sent / Committed received, counted: a Committed answering an earlier FINISH
        # must not mark segments assigned after it as committed (see engine/backup.py).
        self.finishes = dict.fromkeys(self.devices, 0)
        self.commits = dict.fromkeys(self.devices, 0)
        self.last_seen = dict.fromkeys(self.devices, time.monotonic())
        self.reports = {
            i: DeviceReport(url=d.url, label=d.label.label) for i, d in self.devices.items()
        }
        self.free: list[bytearray] = []
        self.allocated = 0
        self.lost = ""
        self.error = ""
        self.started = time.monotonic()

    def start(self, set_id: bytes, meta: dict) -> None:
        for i, dev in self.devices.items():
            writer = StreamWriter(
                dev, set_id, self.entries, meta, self.events, chunk=self.options.chunk
            )
            self.writers[i] = writer
            writer.start()

    # -- feeding -------------------------------------------------------------------------
    def feed(self, stream: BinaryIO, segment: int, buffers: int) -> int:
        """Read the whole stream into segments on the devices; its length."""
        offset = 0
        while True:
            buf = self._take_buffer(segment, buffers)
            n = _read_full(stream, memoryview(buf))
            if n == 0 and offset > 0:
                self.free.append(buf)
                return offset
            self.entries[0] = replace(self.entries[0], size=offset + n if n < segment else 1 << 62)
            self._assign(_Segment(offset, n, buf))
            offset += n
            self._drain()
            if n < segment:
                return offset

    def _take_buffer(self, segment: int, buffers: int) -> bytearray:
        while not self.free and self.allocated >= buffers:
            self._wait_event()
        if self.free:
            return self.free.pop()
        self.allocated += 1
        return bytearray(segment)

    def _assign(self, seg: _Segment) -> int:
        """Give a segment to the least-filled live device with room for it (P5); which."""
        fits = []
        for i in sorted(self.alive):
            free = self.devices[i].space.free
            if free is None or free - self.assigned[i] - (1 << 20) >= seg.size:
                fits.append(i)
        if not fits:
            raise BackupFailedError("no device has room left for the rest of the stream")
        dev = min(fits, key=lambda i: (self.assigned[i], i))
        self.outstanding[dev].append(seg)
        self.assigned[dev] += seg.size
        self.finish_sent[dev] = False
        self.last_seen[dev] = time.monotonic()
        writer = self.writers[dev]
        writer.segments[seg.offset] = memoryview(seg.buffer)[: seg.size]
        writer.inbox.put([Item(0, seg.offset, seg.size, dev)])
        return dev

    def finish(self) -> None:
        """Close every device's volume; wait until all are committed (or failed)."""
        while True:
            if not self.alive:
                raise BackupFailedError("every device failed")
            for dev in sorted(self.alive):
                if not self.outstanding[dev] and not self.finish_sent[dev]:
                    self.finish_sent[dev] = True
                    self.finishes[dev] += 1
                    self.last_seen[dev] = time.monotonic()
                    self.writers[dev].inbox.put(FINISH)
            if all(
                self.finish_sent[d]
                and not self.outstanding[d]
                and self.commits[d] == self.finishes[d]
                for d in self.alive
            ):
                return
            self._wait_event()

    # -- events --------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _wait_event(self) -> None:
        if not self.alive:
            raise BackupFailedError("every device failed")
        try:
            event = self.events.get(timeout=0.25)
        except queue.Empty:
            event = None
        if event is not None:
            self._handle(event)
        now = time.monotonic()
        for dev in sorted(self.alive):
            waiting = self.outstanding[dev] or self.commits[dev] != self.finishes[dev]
            if waiting and now - self.last_seen[dev] > self.options.device_timeout:
                self._fail(dev, f"no progress for {self.options.device_timeout:g} seconds")

    def _handle(self, event: object) -> None:
        dev = event.dev  # type: ignore[attr-defined]
        if dev not in self.alive:
            return
        self.last_seen[dev] = time.monotonic()
        match event:
            case Record(file=fid, ref=ref):
                self.pending[dev].append((fid, ref))
                self.reports[dev].bytes += ref.size
                self.on_event(DeviceBytes(self.reports[dev].url, ref.size))
            case Durable():
                self._flush(dev)
                self.durable_flag[dev] = True
            case ItemDone():
                seg = self.outstanding[dev].popleft()
                self.reports[dev].segments += 1
                if not self.durable_flag[dev]:
                    self.undurable[dev] += seg.size  # its buffer goes back all the same
                self.durable_flag[dev] = False
                self.free.append(seg.buffer)
            case Committed():
                self._flush(dev)
                self.undurable[dev] = 0
                self.commits[dev] += 1
            case FileError(error=error):
                self.lost = self.lost or error
            case Failed(error=error):
                self._fail(dev, error)

    def _flush(self, dev: int) -> None:
        if self.pending[dev]:
            self.catalog.add_records(self.set_hex, self.pending[dev])
            self.pending[dev] = []

    def _fail(self, dev: int, error: str) -> None:
        """Give a device up; its segments still in memory go to the others."""
        self.alive.discard(dev)
        report = self.reports[dev]
        report.status, report.error = "failed", error
        report.failed_at = round(time.monotonic() - self.started, 3)
        self.writers[dev].inbox.put(STOP)
        report.bytes -= sum(ref.size for _, ref in self.pending[dev])
        self.pending[dev] = []
        if self.undurable[dev]:
            self.lost = (
                f"{self.undurable[dev]} bytes of the stream were lost with {report.url}, "
                "which could not make them durable before it failed"
            )
        queued = list(self.outstanding[dev])
        self.outstanding[dev] = deque()
        moved = sum(s.size for s in queued)
        self.on_event(DeviceFailed(report.url, error, moved))
        if not self.alive:
            raise BackupFailedError(f"every device failed; last: {report.url}: {error}")
        for seg in queued:
            url = self.reports[self._assign(seg)].url
            report.redirected[url] = report.redirected.get(url, 0) + seg.size


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from the stream; fewer bytes only at its end."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


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
    """Back up ``stream`` as the file ``name`` (an absolute path) onto the devices."""
    started = time.monotonic()
    options = options or BackupOptions()
    path = "/" + name.lstrip("/")
    catalog.lock_for_run()  # before labelling: two runs must not label one device twice
    alive, dead = open_devices(list(device_urls), create_labels=False, require_label=False)
    try:
        if alive:
            alive, unlabelled = label_devices(alive)
            dead += unlabelled
        for d in dead:
            on_event(DeviceFailed(d.url, d.reason, 0))
        if not alive:
            raise BackupFailedError(
                "no device could be opened: " + "; ".join(f"{d.url}: {d.reason}" for d in dead)
            )
        set_id = new_set_id()
        set_hex = set_id.hex()
        now = time.time_ns()
        entry = FileEntry(path, Kind.FILE, 1 << 62, 0o100600, now, source="-")
        catalog.begin_set(
            set_hex,
            strategy="stream",
            order=str(options.order),
            threshold=segment,
            sources=["-"],
        )
        catalog.add_files(set_hex, [(0, replace(entry, size=0))])
        for d in alive:
            catalog.remember_device(d.label.label, d.url, d.device.scheme)
        on_event(Started("backup", 1, 0, tuple(d.url for d in alive)))
        meta = {
            "set": set_hex,
            "tool": f"parbackup {__version__}",
            "sources": ["-"],
            "strategy": "stream",
            "threshold": segment,
            "devices": len(alive),
        }
        run = _StreamRun(alive, catalog, set_hex, options, on_event, [entry])
        run.start(set_id, meta)
        try:
            total = run.feed(stream, segment, buffers or 2 * len(alive) + 1)
            entry = replace(entry, size=total)
            run.finish()
        except BackupFailedError as exc:
            run.error = str(exc)
            run.alive.clear()
            total = 0
        finally:
            for w in run.writers.values():
                w.inbox.put(STOP)
        reports = [run.reports[d.index] for d in alive]
        for r, d in zip(reports, alive, strict=True):
            r.seconds = run.writers[d.index].busy_seconds
        reports += [DeviceReport(d.url, "", "failed", error=d.reason, failed_at=0.0) for d in dead]
        reports.sort(key=lambda r: device_urls.index(r.url) if r.url in device_urls else 0)
        skipped = []
        if not run.alive:
            status = "failed"
            run.error = run.error or "every device failed; nothing was recorded as backed up"
        else:
            status = "degraded" if any(r.status == "failed" for r in reports) else "complete"
            catalog.set_file_size(set_hex, 0, total)
            if run.lost:
                catalog.mark_files(set_hex, [0], "skipped")
                skipped.append(Skipped(path, run.lost))
        report = BackupReport(
            set_id=set_hex,
            status=status,
            strategy="stream",
            order=str(options.order),
            threshold=segment,
            files=0 if run.lost or status == "failed" else 1,
            bytes=total if status != "failed" and not run.lost else 0,
            seconds=time.monotonic() - started,
            devices=reports,
            skipped=skipped,
            error=run.error,
        )
        catalog.finish_set(
            set_hex,
            status=status,
            files=report.files,
            nbytes=report.bytes,
            report=report.to_json(),
            devices=reports,
        )
        if status != "failed":
            copy_catalog(catalog, [d for d in alive if d.index in run.alive], on_event)
        return report
    finally:
        close_all(alive)
