"""Restoring a device image straight onto a block device (REQUIREMENTS F2).

``restore --target /dev/sdX`` writes one backed-up image (a block device source, or any
single file of the set chosen with ``--include``) onto the device at its offsets, reading
all backup devices at once and checking every record as a normal restore does. The
target must be at least as large as the image; nothing outside the image's length is
touched. The device is flushed before the restore reports success.
"""

from __future__ import annotations

import os
import threading
import time

from parbackup.catalog import Catalog
from parbackup.engine.reader import read_set
from parbackup.engine.restore import (
    RestoreOptions,
    RestoreReport,
    covered,
    records_by_label,
    select_files,
)
from parbackup.errors import CatalogError, RestoreError
from parbackup.model import Kind, RecordRef
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.sources.blockdev import device_size, is_block_device


def run_image_restore(
    catalog: Catalog, options: RestoreOptions, on_event: EventSink = ignore
) -> RestoreReport:
    """Write the one selected image of a set onto the block device ``options.target``."""
    started = time.monotonic()
    if not is_block_device(options.target):
        raise RestoreError(f"{options.target} is not a block device")
    info = catalog.resolve_set(options.set_ref)
    if info.status not in ("complete", "degraded"):
        raise CatalogError(f"set {info.id} is {info.status}, not restorable")
    chosen = [
        f for f in select_files(catalog, info.id, options.includes) if f.entry.kind is Kind.FILE
    ]
    if len(chosen) != 1:
        names = ", ".join(f.entry.path for f in chosen[:5]) or "none"
        raise RestoreError(
            f"restoring onto a block device needs exactly one image; the selection holds "
            f"{len(chosen)} files ({names}); choose one with --include"
        )
    image = chosen[0]
    room = device_size(options.target)
    if room < image.entry.size:
        raise RestoreError(
            f"{options.target} holds {room} bytes, the image {image.entry.path} needs "
            f"{image.entry.size}"
        )
    report = RestoreReport(set_id=info.id, target=options.target)
    records = records_by_label(catalog, info.id, {image.file_id})
    on_event(Started("restore", 1, image.entry.size, tuple(sorted(records))))
    errors: list[tuple[str, str]] = []
    got: list[RecordRef] = []
    lock = threading.Lock()
    fd = os.open(options.target, os.O_WRONLY | os.O_CLOEXEC)
    try:

        def sink(url: str, fid: int, ref: RecordRef, payload: memoryview | None, err: str) -> None:
            if payload is None:
                with lock:
                    errors.append((url, err or "not restored"))
                return
            os.pwrite(fd, payload, ref.offset)
            with lock:
                got.append(ref)

        read_set(
            bytes.fromhex(info.id), records, catalog.device_urls(), options.devices, sink, on_event
        )
        os.fsync(fd)
    finally:
        os.close(fd)
    if not errors and not covered(got, image.entry.size):
        errors.append(("", "records missing from the catalog"))
    if errors:
        device, error = errors[0]
        report.damaged.append({"path": image.entry.path, "device": device, "error": error})
    else:
        report.files, report.bytes = 1, image.entry.size
        on_event(FileDone(image.entry.path))
    report.seconds = time.monotonic() - started
    return report
