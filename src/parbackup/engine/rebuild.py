"""Rebuilding a catalog from the devices alone (REQUIREMENTS X2).

Every volume starts with a header holding its set's metadata (JSON: sources, strategy,
order, threshold, number of devices) and every record carries its set id, file id,
offset, size, checksum, path and metadata. Reading every volume of every device front to
back is therefore enough to recreate the sets, their files and where each record lies;
a kind-8 "meta" record gives its file's extended attributes back.
Each record is checked (header CRC, payload BLAKE3) while it is read; only intact records
enter the new catalog.

With only some devices present, a file whose bytes are not all found is recorded with
state 'incomplete' (never restored) and named in the report. Files that had all their
records on a missing device cannot be named (nothing present mentions them); the report
counts the gaps in the file ids instead.

A set's status is decided from what the devices show: 'complete' when every volume ends
with its end record, every device the set was written to is present and every file is
whole; 'degraded' when it is restorable but something is missing; 'interrupted' when no
volume of it was ever closed (the run died) — such a set is never restored.

Encrypted sets (format version 4, docs/FORMAT.md): the devices carry the key file
(``keys/<key id>.json``), so a passphrase is all that is needed besides them. It is
asked for, and checked, before anything is written; the key file is then kept beside
the new catalog. Every sealed record is authenticated while it is read.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from parbackup import scratch
from parbackup.catalog import Catalog, is_catalog_url, open_catalog
from parbackup.catalog.schema import REBUILDING_KEY
from parbackup.coverage import complete as covered
from parbackup.crypto.codec import Codec, CodecSpec
from parbackup.crypto.keys import unlock_any
from parbackup.engine.devices import OpenDevice, close_all, open_devices
from parbackup.engine.keystore import save_key_at
from parbackup.engine.rebuild_parity import ParityFound, parity_info, rebuild_missing, scan_parity
from parbackup.engine.volscan import PLAIN, SetFound, device_keys, scan_device
from parbackup.errors import KeyUnlockError, UsageError
from parbackup.fileio import fsync_dir
from parbackup.model import DeviceReport, Kind, RecordRef
from parbackup.progress import EventSink, Notice, ignore


@dataclass
class RebuildReport:
    """What ``rebuild-catalog`` found; ``to_json`` gives its ``--json`` document."""

    catalog: str
    devices: list[dict] = field(default_factory=list)
    sets: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every set is complete, 3 when something is missing or damaged."""
        return 0 if all(s["status"] == "complete" for s in self.sets) else 3

    def to_json(self) -> dict:
        return {
            "catalog": self.catalog,
            "devices": self.devices,
            "sets": self.sets,
            "seconds": round(self.seconds, 3),
        }


def _scan_parity(
    alive: list[OpenDevice], found: dict[str, SetFound], on_event: EventSink
) -> dict[str, list[ParityFound]]:
    """Read the parity volume headers (engine/rebuild_parity.py); a set's data device
    that is not present is decoded from parity and its volumes read like the others."""
    parity: dict[str, list[ParityFound]] = {}
    for dev in alive:
        volumes, bad = scan_parity(dev)
        for v in volumes:
            parity.setdefault(v.header.set_id.hex(), []).append(v)
        found.setdefault("", SetFound("", {}, 0)).damaged.extend(bad)
    if not found[""].damaged:
        del found[""]
    present = {dev.label.label: dev for dev in alive}
    with scratch.directory("parbackup-rebuild-") as work:
        for set_hex, volumes in parity.items():
            made, error = rebuild_missing(volumes, present, work)
            if error:
                on_event(Notice(f"set {set_hex}: missing devices not rebuilt: {error}"))
            for dev in made:
                on_event(Notice(f"set {set_hex}: device {dev.label.label} rebuilt from parity"))
                scan_device(dev, found)
    return parity


def pick_records(refs: list[RecordRef], closed: set[tuple[str, str]]) -> list[RecordRef]:
    """The records of one file to keep: its bytes front to back, closed volumes first.

    A volume without its end record was being written when its device failed (or the
    run died); the engine wrote what that device held again elsewhere, so the same bytes
    may be found twice. Walking the file from offset 0, at each offset a record from a
    closed volume is taken over one from an unclosed volume (and a longer over a shorter);
    a record overlapping what is already kept is left out. So an unclosed volume only
    fills what no closed volume holds, and a file whose bytes are whole in closed volumes
    is whole (the result may still have gaps: then the file is incomplete).
    """
    ranked = sorted(refs, key=lambda r: (r.offset, (r.label, r.volume) not in closed, -r.size))
    out: list[RecordRef] = []
    at = 0
    for ref in ranked:
        if out and (ref.offset < at or ref.offset == out[-1].offset):
            continue
        out.append(ref)
        at = ref.offset + ref.size
    return out


def _choose(entry: SetFound) -> dict[int, list[RecordRef]]:
    """Per file id, the records ``pick_records`` keeps (all files, zero-size ones too)."""
    by_file: dict[int, list[RecordRef]] = {}
    for fid, ref in entry.records:
        by_file.setdefault(fid, []).append(ref)
    return {fid: pick_records(refs, entry.closed_names) for fid, refs in by_file.items()}


def _judge(entry: SetFound) -> tuple[str, dict[int, str]]:
    """The set's status and, per file id, why it is incomplete."""
    by_file = _choose(entry)
    incomplete = {
        fid: "bytes missing: the rest is on a device that is not present, or damaged"
        for fid, e in entry.files.items()
        if e.kind is Kind.FILE and not covered(by_file.get(fid, []), e.size)
    }
    if entry.closed == 0:
        return "interrupted", incomplete
    whole = (
        entry.closed == entry.volumes
        and not entry.damaged
        and not incomplete
        and len(entry.labels) >= int(entry.meta.get("devices", 0))
        and set(entry.files) == set(range(len(entry.files)))
        and entry.meta.get("kind", "full") == "full"
    )
    return ("complete" if whole else "degraded"), incomplete


def rebuild_catalog(
    device_urls: list[str],
    catalog_path: str,
    on_event: EventSink = ignore,
    passphrase: Callable[[], bytes] | None = None,
) -> RebuildReport:
    """Read every volume on the devices and write the sets found into a new catalog.

    When the devices carry a key file, ``passphrase()`` unlocks it (KeyUnlockError for a
    wrong one, before anything is written) and the key file is kept beside the catalog.
    """
    started = time.monotonic()
    shown = catalog_path
    if is_catalog_url(catalog_path):
        with open_catalog(catalog_path) as catalog:
            _check_writable(catalog)
            shown = catalog.path
    elif os.path.exists(catalog_path):
        raise UsageError(f"{catalog_path} exists; rebuild-catalog writes a new catalog only")
    alive, dead = open_devices(list(device_urls), create_labels=False, write=False)
    report = RebuildReport(catalog=shown)
    found: dict[str, SetFound] = {}
    try:
        for d in dead:
            on_event(Notice(f"device not read: {d.url}: {d.reason}"))
            report.devices.append({"url": d.url, "error": d.reason})
        codec = PLAIN
        keyfile = None
        if copies := device_keys(alive):
            if passphrase is None:
                raise KeyUnlockError("the devices hold encrypted sets: a passphrase is needed")
            keyfile, master = unlock_any(copies, passphrase())
            codec = Codec(CodecSpec(master=master, key_id=keyfile.key_id))
        for dev in alive:
            report.devices.append(scan_device(dev, found, codec))
        parity = _scan_parity(alive, found, on_event)
        unattributed = found.pop("", None)
        urls = {dev.label.label: dev.url for dev in alive}
        info = {set_hex: parity_info(vols) for set_hex, vols in parity.items()}

        def fill(catalog: Catalog) -> None:  # the same into a file or onto a server
            _fill(catalog, alive, found, urls, report, on_event, info)

        if is_catalog_url(catalog_path):
            _write_server_catalog(catalog_path, fill)
        else:
            _write_catalog(catalog_path, fill)
        if keyfile is not None:
            save_key_at(catalog_path, keyfile)
        if unattributed:
            report.sets.append({"set": "", "status": "unreadable", "damaged": unattributed.damaged})
    finally:
        close_all(alive)
    report.seconds = time.monotonic() - started
    return report


def partial_path(catalog_path: str) -> str:
    """Where a rebuild writes its catalog until it is whole (then renamed into place)."""
    return f"{catalog_path}.partial"


def _write_catalog(catalog_path: str, fill: Callable[[Catalog], None]) -> None:
    """Write the sets (``fill``) into a new catalog under a temporary name, then rename it.

    A rebuild killed half way leaves no catalog at ``catalog_path`` (a half-written one
    would show complete sets as missing or 'running', and prune would delete their
    volumes); the partial file carries the REBUILDING_KEY mark, so even it is refused.
    """
    partial = partial_path(catalog_path)
    extras = (f"{partial}-wal", f"{partial}-shm", f"{partial}.lock")
    _unlink((partial, *extras))  # what an earlier, killed rebuild of the same catalog left
    try:
        with Catalog(partial) as catalog:
            fill(catalog)
            catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:  # failed (a full disk) or interrupted: leave no half catalog
        _unlink((partial, *extras))
        raise
    try:
        if os.path.exists(catalog_path):
            raise UsageError(f"{catalog_path} appeared while the catalog was rebuilt; left alone")
        os.replace(partial, catalog_path)
        fsync_dir(os.path.dirname(os.path.abspath(catalog_path)))
    finally:
        _unlink(extras)


def _unlink(paths: tuple[str, ...]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _check_writable(catalog: Catalog) -> None:
    """A catalog on a server may be rebuilt into only while it is empty, or half written
    by an earlier rebuild-catalog that was killed (its mark is still there)."""
    if not catalog.is_empty() and not catalog.meta(REBUILDING_KEY):
        raise UsageError(f"{catalog.path} holds sets; rebuild-catalog writes an empty catalog only")


def _write_server_catalog(url: str, fill: Callable[[Catalog], None]) -> None:
    """Write the sets (``fill``) into an empty catalog on a server (PostgreSQL). There is no file
    to rename into place: the REBUILDING_KEY mark, set first and cleared last, keeps a
    half-written catalog from being pruned on, and a rebuild run again starts afresh."""
    with open_catalog(url) as catalog:
        catalog.lock_for_run()  # no backup writes into it meanwhile
        _check_writable(catalog)
        catalog.set_meta(REBUILDING_KEY, str(os.getpid()))
        catalog.clear()
        fill(catalog)


def _fill(
    catalog: Catalog,
    alive: list[OpenDevice],
    found: dict[str, SetFound],
    urls: dict[str, str],
    report: RebuildReport,
    on_event: EventSink,
    parity: dict[str, dict] | None = None,
) -> None:
    """Write the devices and sets found into ``catalog``, under the REBUILDING_KEY mark;
    ``parity``: set id -> the parity layout read from the parity volumes."""
    catalog.set_meta(REBUILDING_KEY, str(os.getpid()))
    for dev in alive:
        catalog.remember_device(dev.label.label, dev.url, dev.device.scheme)
    for entry in sorted(found.values(), key=lambda e: e.created_ns):
        doc = _write_set(catalog, entry, urls, on_event)
        if parity and entry.set_hex in parity:
            catalog.set_parity(entry.set_hex, parity[entry.set_hex])
            doc["parity"] = {"k": parity[entry.set_hex]["k"], "m": parity[entry.set_hex]["m"]}
        report.sets.append(doc)
    catalog.set_meta(REBUILDING_KEY, None)


def _write_set(
    catalog: Catalog, entry: SetFound, urls: dict[str, str], on_event: EventSink = ignore
) -> dict:
    meta = entry.meta
    status, incomplete = _judge(entry)
    created = datetime.fromtimestamp(entry.created_ns / 1e9, UTC).isoformat(timespec="seconds")
    catalog.begin_set(
        entry.set_hex,
        strategy=str(meta.get("strategy", "")),
        order=str(meta.get("order", "")),
        threshold=int(meta.get("threshold", 0)),
        sources=[str(s) for s in meta.get("sources", [])],
        kind=str(meta.get("kind", "full")),
        created=created,
    )
    if meta.get("xattrs", True) is False:  # taken with --no-xattrs: none was read
        catalog.set_without_xattrs(entry.set_hex)
    on_event(Notice(f"set {entry.set_hex}: writing {len(entry.files)} file(s) into the catalog"))
    metas = entry.metas
    files = sorted(entry.files.items())
    catalog.add_files(entry.set_hex, [(f, replace(e, meta=metas.get(f, b""))) for f, e in files])
    chosen = _choose(entry)
    catalog.add_records(
        entry.set_hex, [(fid, ref) for fid, refs in sorted(chosen.items()) for ref in refs]
    )
    if incomplete:
        catalog.mark_files(entry.set_hex, incomplete, "incomplete")
    missing_ids = (max(entry.files) + 1 - len(entry.files)) if entry.files else 0
    whole = [e for fid, e in entry.files.items() if fid not in incomplete]
    doc = {
        "set": entry.set_hex,
        "status": status,
        "created": created,
        "sources": meta.get("sources", []),
        "devices_written": meta.get("devices"),
        "devices_found": sorted(entry.labels),
        "volumes": entry.volumes,
        "closed_volumes": entry.closed,
        "files": len(whole),
        "bytes": sum(e.size for e in whole),
        "incomplete": [
            {"path": entry.files[fid].path, "error": why} for fid, why in sorted(incomplete.items())
        ],
        "unknown_file_ids": missing_ids,
        "damaged": entry.damaged,
        "rebuilt": True,
    }
    if meta.get("kind", "full") != "full":
        doc["note"] = (
            "an incremental set: files it reused from its parent are not on its"
            " volumes, so the rebuilt set lists only the files it wrote"
        )
    catalog.finish_set(
        entry.set_hex,
        status=status,
        files=doc["files"],
        nbytes=doc["bytes"],
        report=doc,
        devices=[DeviceReport(url=urls.get(lab, ""), label=lab) for lab in sorted(entry.labels)],
    )
    return doc
