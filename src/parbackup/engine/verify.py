"""Verifying a set: read every record back from every device and check it (X3)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.engine.reader import read_set
from parbackup.engine.restore import covered, records_by_label
from parbackup.model import Kind, RecordRef
from parbackup.progress import EventSink, Started, ignore


@dataclass
class VerifyReport:
    """The outcome of a verify; ``to_json`` gives the ``verify --json`` document."""

    set_id: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    damaged: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "damaged" if self.damaged else "ok"

    @property
    def exit_code(self) -> int:
        return 1 if self.damaged else 0

    def to_json(self) -> dict:
        return {
            "set": self.set_id,
            "status": self.status,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "damaged": self.damaged,
        }


def run_verify(
    catalog: Catalog,
    set_ref: str | None = None,
    devices: tuple[str, ...] = (),
    on_event: EventSink = ignore,
) -> VerifyReport:
    """Check that every record of a set is present and intact; name each damaged file."""
    started = time.monotonic()
    info = catalog.resolve_set(set_ref)
    report = VerifyReport(set_id=info.id)
    files = {
        f.file_id: f.entry
        for f in catalog.files(info.id)
        if f.state == "ok" and f.entry.kind is Kind.FILE
    }
    records = records_by_label(catalog, info.id, set(files))
    on_event(
        Started("verify", len(files), sum(e.size for e in files.values()), tuple(sorted(records)))
    )
    damage: dict[int, tuple[str, str]] = {}
    good: dict[int, list[RecordRef]] = {}
    lock = threading.Lock()

    def sink(url: str, fid: int, ref: RecordRef, payload: memoryview | None, error: str) -> None:
        with lock:
            if payload is None:
                damage.setdefault(fid, (url, error))
            else:
                good.setdefault(fid, []).append(ref)

    read_set(bytes.fromhex(info.id), records, catalog.device_urls(), devices, sink, on_event)
    for fid, entry in files.items():
        if fid not in damage and not covered(good.get(fid, []), entry.size):
            damage[fid] = ("", "records missing")
        if fid in damage:
            device, error = damage[fid]
            report.damaged.append({"path": entry.path, "device": device, "error": error})
        else:
            report.files += 1
            report.bytes += entry.size
    report.seconds = time.monotonic() - started
    return report
