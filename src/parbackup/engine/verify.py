"""Verifying a set: read every record back from every device and check it (X3)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.engine.integrity import check_volumes
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
    volume_damage = _check_frames(catalog, info.id, devices, damage)
    for fid, entry in files.items():
        if fid not in damage and not covered(good.get(fid, []), entry.size):
            damage[fid] = ("", "records missing")
        if fid in damage:
            device, error = damage[fid]
            report.damaged.append({"path": entry.path, "device": device, "error": error})
        else:
            report.files += 1
            report.bytes += entry.size
    names = {f.file_id: f.entry.path for f in catalog.files(info.id)}
    for fid, (device, error) in sorted(damage.items()):
        if fid not in files:
            report.damaged.append({"path": names.get(fid, ""), "device": device, "error": error})
    report.damaged.extend(volume_damage)
    report.seconds = time.monotonic() - started
    return report


def _check_frames(
    catalog: Catalog, set_id: str, overrides: tuple[str, ...], damage: dict[int, tuple[str, str]]
) -> list[dict]:
    """Check every volume's frame (engine/integrity.py); add what hits a file to ``damage``.

    Returns the damage that hits no file (a volume header, an end record), naming the
    volume in place of a path.
    """
    out: list[dict] = []
    by_label: dict[str, list[tuple[int, RecordRef]]] = {}
    for fid, ref in catalog.records(set_id):
        if not ref.origin_set:  # records reused from an earlier set lie in its volumes
            by_label.setdefault(ref.label, []).append((fid, ref))
    failed = {d["label"] for d in catalog.set_devices(set_id) if d["status"] == "failed"}
    known = {k: v for k, v in catalog.device_urls().items() if k in by_label}
    opened, _unreachable = devices_for_labels(known, list(overrides), write=False)
    try:
        for label, refs in by_label.items():
            dev = opened.get(label)
            if dev is None:
                continue  # the reader already reported every record of this device
            if dev.device.capabilities.sequential:
                continue  # a tape is read in one pass only; its stream frames carry CRCs
            for hit in check_volumes(
                dev.device, bytes.fromhex(set_id), refs, expect_end=label not in failed
            ):
                if hit.file is not None:
                    damage.setdefault(hit.file, (dev.url, hit.error))
                else:
                    out.append(
                        {"path": "", "volume": hit.volume, "device": dev.url, "error": hit.error}
                    )
    finally:
        close_all(list(opened.values()))
    return out
