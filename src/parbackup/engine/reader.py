"""Reading the records of a set back from one device, checking every one of them.

Restore and verify share this: for each wanted record the reader hands over either the
payload (header parsed and matched against the catalog, payload checksum verified) or the
reason it could not. Records that lie next to each other in a volume are fetched with one
read of up to ``SPAN`` bytes, so small files cost one round trip per span, not per file.
Sequential devices (tape) are read front to back in one pass instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import groupby

from parbackup.devices.base import Device
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.errors import DeviceError, FormatError
from parbackup.format import (
    MAX_NAME,
    MAX_PAYLOAD,
    RECORD_FIXED_SIZE,
    RecordHeader,
    checksum,
    iter_volume,
    parse_record_header,
    read_volume_header,
)
from parbackup.model import RecordRef
from parbackup.progress import DeviceBytes, EventSink

SPAN = 16 << 20
MAX_HEADER = RECORD_FIXED_SIZE + 2 * MAX_NAME + 4
"""No record header is longer; a catalog saying otherwise is damaged or crafted."""

Deliver = Callable[[int, RecordRef, memoryview | None, str], None]
"""deliver(file id, record, payload or None, error text) -- called once per record."""


def expected_owner(fid: int, ref: RecordRef, set_id: bytes) -> tuple[bytes, int]:
    """The (set id, file id) a record's header must carry: its origin set's, if reused."""
    if ref.origin_set:
        return bytes.fromhex(ref.origin_set), ref.origin_file
    return set_id, fid


def matches_catalog(header: RecordHeader, fid: int, ref: RecordRef, set_id: bytes) -> bool:
    """True when a record header is the one the catalog describes."""
    owner_set, owner_file = expected_owner(fid, ref, set_id)
    return (header.set_id, header.file_id, header.offset, header.size) == (
        owner_set,
        owner_file,
        ref.offset,
        ref.size,
    ) and header.checksum == ref.checksum


def _check(fid: int, ref: RecordRef, set_id: bytes, head: bytes, payload: memoryview) -> str:
    """'' if the record matches the catalog and its checksum, else what is wrong."""
    try:
        header = parse_record_header(head)
    except FormatError as exc:
        return f"damaged record header: {exc}"
    if not matches_catalog(header, fid, ref, set_id):
        return "record does not match the catalog"
    if len(payload) != ref.size:
        return "record is cut short"
    if checksum(payload) != ref.checksum:
        return "payload checksum mismatch"
    return ""


def read_records(
    device: Device,
    set_id: bytes,
    wanted: Sequence[tuple[int, RecordRef]],
    deliver: Deliver,
    *,
    span: int = SPAN,
) -> None:
    """Fetch and check every wanted record of one device; report each through deliver."""
    sane = []
    for fid, ref in wanted:
        if not 0 <= ref.size <= MAX_PAYLOAD or not 0 < ref.header_size <= MAX_HEADER:
            deliver(fid, ref, None, "catalog record sizes are out of range")
        elif ref.position < 0 or ref.offset < 0:
            deliver(fid, ref, None, "catalog record position is out of range")
        else:
            sane.append((fid, ref))
    if device.capabilities.sequential:
        _read_sequential(device, set_id, sane, deliver)
        return
    ordered = sorted(sane, key=lambda w: (w[1].volume, w[1].position))
    for volume, group in groupby(ordered, key=lambda w: w[1].volume):
        batch: list[tuple[int, RecordRef]] = []
        for fid, ref in group:
            end = ref.position + ref.header_size + ref.size
            if batch:
                first = batch[0][1]
                last = batch[-1][1]
                contiguous = ref.position == last.position + last.header_size + last.size
                if not contiguous or end - first.position > span:
                    _read_span(device, volume, set_id, batch, deliver)
                    batch = []
            batch.append((fid, ref))
        if batch:
            _read_span(device, volume, set_id, batch, deliver)


def _read_span(
    device: Device,
    volume: str,
    set_id: bytes,
    batch: list[tuple[int, RecordRef]],
    deliver: Deliver,
) -> None:
    start = batch[0][1].position
    last = batch[-1][1]
    length = last.position + last.header_size + last.size - start
    try:
        data = memoryview(device.read(volume, start, length))
    except DeviceError as exc:
        for fid, ref in batch:
            deliver(fid, ref, None, str(exc))
        return
    for fid, ref in batch:
        at = ref.position - start
        head = bytes(data[at : at + ref.header_size])
        payload = data[at + ref.header_size : at + ref.header_size + ref.size]
        error = _check(fid, ref, set_id, head, payload)
        deliver(fid, ref, None if error else payload, error)


def _read_sequential(
    device: Device, set_id: bytes, wanted: Sequence[tuple[int, RecordRef]], deliver: Deliver
) -> None:
    """One pass front to back over each volume, serving the wanted records as they pass."""
    by_volume: dict[str, dict[int, tuple[int, RecordRef]]] = {}
    for fid, ref in wanted:
        by_volume.setdefault(ref.volume, {})[ref.position] = (fid, ref)
    for volume in sorted(by_volume):
        want = by_volume[volume]
        try:
            with device.open_read(volume) as stream:
                start = read_volume_header(stream).length
                for position, header, payload in iter_volume(stream, start):
                    hit = want.pop(position, None)
                    if hit is None:
                        continue
                    fid, ref = hit
                    error = ""
                    if not matches_catalog(header, fid, ref, set_id):
                        error = "record does not match the catalog"
                    deliver(fid, ref, None if error else memoryview(payload), error)
                    if not want:
                        break
        except (DeviceError, FormatError) as exc:
            for fid, ref in want.values():
                deliver(fid, ref, None, str(exc))
            continue
        for fid, ref in want.values():
            deliver(fid, ref, None, "record not found in volume")


Sink = Callable[[str, int, RecordRef, memoryview | None, str], None]
"""sink(device url or label, file id, record, payload or None, error) -- from any thread."""


def read_set(
    set_id: bytes,
    records: dict[str, list[tuple[int, RecordRef]]],
    known_urls: dict[str, str],
    overrides: Sequence[str],
    sink: Sink,
    on_event: EventSink,
) -> None:
    """Read the wanted records from all their devices at once, one thread per device.

    Devices are found by label (``--device`` URLs first, then where the catalog last saw
    them). Records of a device that cannot be reached are reported to ``sink`` as errors.
    Progress events are emitted on the calling thread, about ten times a second: the
    readers only add to counters (a queue hand-off per record cost the readers a third of
    their time on small files, waking this thread for every record).
    """
    opened, missing = devices_for_labels(
        {label: url for label, url in known_urls.items() if label in records},
        list(overrides),
        write=False,
    )
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def report_progress() -> None:
        with lock:
            moved = [(url, n) for url, n in counts.items() if n]
            counts.clear()
        for url, n in moved:
            on_event(DeviceBytes(url, n))

    try:
        threads = []
        for label, wanted in records.items():
            dev = opened.get(label)
            if dev is None:
                reason = "device unavailable: " + missing.get(label, "not known to the catalog")
                for fid, ref in wanted:
                    sink(known_urls.get(label, label), fid, ref, None, reason)
                continue

            def deliver(
                fid: int, ref: RecordRef, payload: memoryview | None, error: str, url: str = dev.url
            ) -> None:
                sink(url, fid, ref, payload, error)
                with lock:
                    counts[url] = counts.get(url, 0) + ref.size

            t = threading.Thread(
                target=read_records,
                args=(dev.device, set_id, wanted, deliver),
                name=f"reader-{label[:8]}",
                daemon=True,
            )
            threads.append(t)
            t.start()
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(timeout=0.1)
            report_progress()
        report_progress()
    finally:
        close_all(list(opened.values()))
