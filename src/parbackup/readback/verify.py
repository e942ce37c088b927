"""Verifying a set: read every record back from every device and check it (X3).

Each device's reader process checks every payload record (header against the catalog,
BLAKE3 checksum) and then the frame of each of its volumes (readback/frames.py: the
volume header, payload-less records, the end record, and that the records tile the
volume exactly), so one flipped, cut or missing byte anywhere is found. Tapes are read
in one pass only; their stream frames carry CRCs.

A volume whose tail is cut where no file's bytes lie (its end record, and the payload-less
records of directories, links and empty files or the metadata records before it, which a
restore takes from the catalog) is ``volume-damaged``, exit 3: every file whole, those
entries named with the volume, not as damaged files. It used to say ``damaged`` (exit 1),
as of a set whose files were lost. Bytes changed (not cut) keep exit 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.crypto.codec import CodecSpec
from parbackup.model import RESTORABLE_FILE_STATES, FileEntry, Kind, RecordRef
from parbackup.progress import EventSink, Started, ignore
from parbackup.readback.core import read_back, warm_up
from parbackup.readback.recover import check_parity, recovered
from parbackup.readback.select import (
    SHARED_PATH,
    covered,
    identities,
    lost_rows,
    rebuilt_incomplete,
    restorable_set,
    shared_paths,
    unlisted_lost,
)
from parbackup.readback.sinks import VerifySinkSpec
from parbackup.workers import Executor


@dataclass
class VerifyReport:
    """The outcome of a verify; ``to_json`` gives the ``verify --json`` document."""

    set_id: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    damaged: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    """Devices of a parity set that are missing or unusable: label, url, error."""
    parity: dict = field(default_factory=dict)
    """For a parity set: k, m and the redundancy left (m less the devices missing)."""

    only_cut: bool = False
    """Every entry of ``damaged`` is a volume's tail cut where no file's bytes lie."""

    @property
    def status(self) -> str:
        """ok: whole; recoverable: devices missing but every byte read around them;
        volume-damaged: a volume's tail cut where no file's bytes lie (every file whole);
        damaged: bytes lost or changed."""
        if self.damaged:
            return "volume-damaged" if self.only_cut else "damaged"
        return "recoverable" if self.missing else "ok"

    @property
    def exit_code(self) -> int:
        """1 when damaged; 3 when every file is whole but not every volume or device is;
        0 when all is whole."""
        if self.damaged and not self.only_cut:
            return 1
        return 3 if self.damaged or self.missing else 0

    def to_json(self) -> dict:
        return {
            "set": self.set_id,
            "status": self.status,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "damaged": self.damaged,
            **({"missing": self.missing} if self.missing or self.parity else {}),
            **({"parity": self.parity} if self.parity else {}),
        }


def run_verify(
    catalog: Catalog,
    set_ref: str | None = None,
    devices: tuple[str, ...] = (),
    on_event: EventSink = ignore,
    codec: CodecSpec | None = None,
    *,
    executor: Executor | None = None,
) -> VerifyReport:
    """Check that every record of a set is present and intact; name each damaged file."""
    started = time.monotonic()
    warm_up()
    info = restorable_set(catalog, set_ref)  # a dead set is not 'damaged'
    report = VerifyReport(set_id=info.id)
    files: dict[int, FileEntry] = {}
    rows = 0
    paths: list[str] = []
    for f in catalog.files(info.id):
        rows += 1
        if f.state in RESTORABLE_FILE_STATES:
            paths.append(f.entry.path)
            if f.entry.kind is Kind.FILE:
                files[f.file_id] = f.entry
    twice = shared_paths(paths)
    del paths
    work: dict[str, list[tuple[int, RecordRef]]] = {}
    frames: dict[str, list[tuple[int, RecordRef]]] = {}
    refs: dict[int, list[RecordRef]] = {}
    for fid, ref in catalog.records(info.id):
        if fid in files and ref.size:
            work.setdefault(ref.label, []).append((fid, ref))
            refs.setdefault(fid, []).append(ref)
        if not ref.origin_set:  # records reused from an earlier set lie in its volumes
            frames.setdefault(ref.label, []).append((fid, ref))
    on_event(
        Started("verify", len(files), sum(e.size for e in files.values()), tuple(sorted(work)))
    )
    failed = {d["label"] for d in catalog.set_devices(info.id) if d["status"] == "failed"}
    known = catalog.device_urls()
    idents = identities(files.items())

    def read(suspects: list[str]):
        with recovered(
            catalog, info.id, known, devices, suspects, share=executor is None
        ) as rescue:
            outcome = read_back(
                bytes.fromhex(info.id),
                work,
                known,
                tuple(rescue.urls) + tuple(devices),  # stand-ins win over -d
                lambda _label: VerifySinkSpec(),
                on_event,
                frames={label: (recs, label not in failed) for label, recs in frames.items()},
                codec=codec,
                executor=executor,
                idents=idents,
            )
        return rescue, outcome

    rescue, outcome = read([])
    if rescue.parity and (outcome.damaged or outcome.volumes):
        # damaged bytes in a present volume: rebuild that device's columns from the row
        # digests and parity, and read again from the rebuilt copy
        by_url = {url: label for label, url in known.items()}
        suspects = {r.label for fid in outcome.damaged for r in refs.get(fid, [])}
        suspects |= {by_url.get(v["device"], "") for v in outcome.volumes} - {""}
        suspects -= set(rescue.missing)
        if suspects:
            again, second = read(sorted(suspects))
            if not (second.damaged or second.volumes or again.error):
                rescue, outcome = again, second
    if rescue.parity:
        for label, why in check_parity(catalog, info.id, known, devices).items():
            rescue.missing.setdefault(label, why)
        parity = catalog.parity(info.id) or {}
        report.missing = [
            {"label": label, "url": known.get(label, ""), "error": why}
            for label, why in sorted(rescue.missing.items())
        ]
        left = parity.get("m", 0) - len(rescue.missing)
        report.parity = {"k": parity.get("k"), "m": parity.get("m"), "redundancy": left}
        if rescue.error:
            report.parity["error"] = rescue.error
    damage = outcome.damaged
    for fid, entry in files.items():
        labels = {r.label for r in refs.get(fid, [])}
        if fid not in damage and not covered(refs.get(fid, []), entry.size):
            damage[fid] = ("", "records missing")
        if fid not in damage and not outcome.ok(fid, len(labels)):
            damage[fid] = ("", "not verified")
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
    cuts = 0
    for hit in outcome.volumes:  # the entry a payload-less record cut off is of, by path
        fid = hit.pop("file")
        cuts += hit.pop("cut")
        report.damaged.append(hit | ({} if fid is None else {"entry": names.get(fid, "")}))
    report.damaged.extend({"path": p, "device": "", "error": SHARED_PATH} for p in sorted(twice))
    report.damaged.extend(lost_rows(info, rows))
    report.damaged.extend(unlisted_lost(info))
    report.damaged.extend(rebuilt_incomplete(info))
    report.only_cut = cuts == len(report.damaged)
    report.seconds = time.monotonic() - started
    return report
