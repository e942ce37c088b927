"""Restoring one file of a set to a stream (``restore --stdout``).

Restore to a stream: one file's records are read in offset order, one reader thread per
device and a bounded window of reads in flight, checked, and written out in order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from parbackup.catalog import Catalog
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.engine.reader import read_records
from parbackup.engine.restore import RestoreReport, covered, matches
from parbackup.errors import CatalogError, RestoreError
from parbackup.model import Kind, RecordRef
from parbackup.progress import DeviceBytes, EventSink, FileDone, Started, ignore


def restore_to_stream(
    catalog: Catalog,
    set_ref: str | None,
    pattern: str,
    out: BinaryIO,
    devices: Sequence[str] = (),
    on_event: EventSink = ignore,
    *,
    window: int = 0,
) -> RestoreReport:
    """Write the one file of a set matching ``pattern`` to ``out``, in order, checked.

    Reads run ahead on every device at once (one thread per device, at most ``window``
    records in flight), so memory is bounded by ``window`` records.
    """
    started = time.monotonic()
    info = catalog.resolve_set(set_ref)
    if info.status not in ("complete", "degraded"):
        raise CatalogError(f"set {info.id} is {info.status}, not restorable")
    wanted = "/" + pattern.lstrip("/")
    files = [
        f
        for f in catalog.files(info.id)
        if f.state == "ok" and f.entry.kind is Kind.FILE and matches(f.entry.path, [wanted])
    ]
    if len(files) != 1:
        names = ", ".join(f.entry.path for f in files[:5]) or "none"
        raise RestoreError(f"--stdout needs exactly one file; {pattern!r} matches {names}")
    chosen = files[0]
    refs = sorted(
        (ref for fid, ref in catalog.records(info.id) if fid == chosen.file_id and ref.size),
        key=lambda r: r.offset,
    )
    report = RestoreReport(set_id=info.id, target="-")
    if not covered(refs, chosen.entry.size):
        report.damaged.append({"path": chosen.entry.path, "device": "", "error": "records missing"})
        return report
    labels = sorted({r.label for r in refs})
    known = {k: v for k, v in catalog.device_urls().items() if k in labels}
    opened, missing = devices_for_labels(known, list(devices), write=False)
    on_event(Started("restore", 1, chosen.entry.size, tuple(d.url for d in opened.values())))
    set_id = bytes.fromhex(info.id)
    pools = {label: ThreadPoolExecutor(1, thread_name_prefix="stream-read") for label in opened}

    def fetch(ref: RecordRef) -> tuple[str, bytes | None, str]:
        dev = opened[ref.label]
        got: list = []
        read_records(
            dev.device,
            set_id,
            [(chosen.file_id, ref)],
            lambda _f, _r, payload, err: got.append(
                (None if payload is None else bytes(payload), err)
            ),
        )
        payload, err = got[0] if got else (None, "record not read")
        return dev.url, payload, err

    try:
        in_flight: deque[Future] = deque()
        todo = iter(refs)
        limit = window or 2 * max(1, len(opened))
        while True:
            while len(in_flight) < limit:
                ref = next(todo, None)
                if ref is None:
                    break
                if ref.label not in opened:
                    reason = missing.get(ref.label, "device not known to the catalog")
                    report.damaged.append(
                        {"path": chosen.entry.path, "device": ref.label, "error": reason}
                    )
                    return report
                in_flight.append(pools[ref.label].submit(fetch, ref))
            if not in_flight:
                break
            url, payload, err = in_flight.popleft().result()
            if payload is None:
                report.damaged.append({"path": chosen.entry.path, "device": url, "error": err})
                return report
            out.write(payload)
            on_event(DeviceBytes(url, len(payload)))
        out.flush()
        report.files, report.bytes = 1, chosen.entry.size
        on_event(FileDone(chosen.entry.path))
        return report
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        close_all(list(opened.values()))
        report.seconds = time.monotonic() - started
