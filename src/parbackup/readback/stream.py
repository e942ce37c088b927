"""Restoring one file of a set to a stream (``restore --stdout``), in order, checked.

Every device holding part of the file is read at once by its own reader process; each
sends its checked payloads back (readback/sinks.py StreamSink), at most a small window of
them ahead of what has been written, so memory stays bounded however large the file.
This process writes them out in file order. The first damaged record ends the restore.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import BinaryIO

from parbackup.catalog import Catalog
from parbackup.crypto.codec import CodecSpec
from parbackup.errors import RestoreError
from parbackup.model import RESTORABLE_FILE_STATES, Kind, RecordRef
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.readback.core import read_back, warm_up
from parbackup.readback.options import RestoreReport
from parbackup.readback.recover import recovered
from parbackup.readback.select import covered, restorable_set
from parbackup.readback.sinks import StreamSinkSpec
from parbackup.selection import matches


class _InOrder:
    """Writes chunks arriving from several readers to ``out`` in file-offset order."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.next = out, 0
        self.waiting: dict[int, tuple[str, bytes]] = {}

    def take(self, label: str, offset: int, data: bytes) -> list[str]:
        """Hold or write one chunk; the labels of the chunks written now."""
        self.waiting[offset] = (label, data)
        written = []
        while self.next in self.waiting:
            label, data = self.waiting.pop(self.next)
            self.out.write(data)
            self.next += len(data)
            written.append(label)
        return written


def restore_to_stream(
    catalog: Catalog,
    set_ref: str | None,
    pattern: str,
    out: BinaryIO,
    devices: Sequence[str] = (),
    on_event: EventSink = ignore,
    *,
    window: int = 0,
    codec: CodecSpec | None = None,
) -> RestoreReport:
    """Write the one file of a set matching ``pattern`` to ``out``, in order, checked.

    At most ``window`` records (default: two per device) are read ahead of ``out``.
    """
    started = time.monotonic()
    warm_up()
    info = restorable_set(catalog, set_ref)
    wanted = "/" + pattern.lstrip("/")
    files = [
        f
        for f in catalog.files(info.id)
        if f.entry.kind in (Kind.FILE, Kind.HARDLINK)
        and (f.state in RESTORABLE_FILE_STATES or f.entry.kind is Kind.HARDLINK)
        and matches(f.entry.path, [wanted])
    ]
    plain = [f for f in files if f.entry.kind is Kind.FILE]
    if len(plain) == 1 and all(
        f.entry.link == plain[0].entry.path for f in files if f not in plain
    ):
        files = plain  # one file and names of it: its bytes, as before names were matched
    if len(files) != 1:
        names = ", ".join(f.entry.path for f in files[:5]) or "none"
        raise RestoreError(f"--stdout needs exactly one file; {pattern!r} matches {names}")
    chosen = files[0]
    if chosen.entry.kind is Kind.HARDLINK:
        # another name of a file met earlier in the scan: its bytes are that file's
        # (it used to be "matches none": the data could not be had through this name)
        link = chosen.entry.link
        first = [
            f
            for f in catalog.files(info.id)  # a second pass: a set's rows are not all held
            if f.entry.path == link and f.entry.kind is Kind.FILE
        ]
        if not first or first[0].state not in RESTORABLE_FILE_STATES:
            why = first[0].state if first else "not in the set"
            raise RestoreError(
                f"{chosen.entry.path} is a hard link of {chosen.entry.link}, which is {why}"
            )
        chosen = first[0]
    records: dict[str, list[tuple[int, RecordRef]]] = {}
    for fid, ref in catalog.records(info.id):
        if fid == chosen.file_id and ref.size:
            records.setdefault(ref.label, []).append((fid, ref))
    report = RestoreReport(set_id=info.id, target="-")
    refs = [ref for recs in records.values() for _fid, ref in recs]
    if not covered(refs, chosen.entry.size):
        report.damage(chosen.entry.path, "", "records missing")
        report.seconds = time.monotonic() - started
        return report
    known = catalog.device_urls()
    on_event(Started("restore", 1, chosen.entry.size, tuple(known.get(lb, lb) for lb in records)))
    per_reader = max(1, window // max(1, len(records))) if window else 2
    writer = _InOrder(out)
    with recovered(catalog, info.id, known, devices) as rescue:
        outcome = read_back(
            bytes.fromhex(info.id),
            records,
            known,
            tuple(rescue.urls) + tuple(devices),  # stand-ins win over -d
            lambda _label: StreamSinkSpec(per_reader),
            on_event,
            on_chunk=writer.take,
            stop_on_damage=True,
            codec=codec,
        )
    report.rebuilt = sorted(rescue.missing)
    if chosen.file_id in outcome.damaged or writer.next != chosen.entry.size:
        device, error = outcome.damaged.get(chosen.file_id, ("", "not restored"))
        report.damage(chosen.entry.path, device, error)
    else:
        out.flush()
        report.files, report.bytes = 1, chosen.entry.size
        on_event(FileDone(chosen.entry.path))
    report.seconds = time.monotonic() - started
    return report
