"""Restoring a device image straight onto a block device (REQUIREMENTS F2).

``restore --target /dev/sdX`` writes one backed-up image (a block device source, or any
single file of the set chosen with ``--include``) onto the device at its offsets. Every
backup device is read at once by its own reader process, which checks every record as a
normal restore does and writes it onto the target itself (readback/sinks.py BlockSink),
then flushes it. The target must be at least as large as the image; nothing outside the
image's length is touched. The image counts as restored only when every reader wrote and
flushed its part.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

from parbackup.catalog import Catalog, CatalogFile
from parbackup.errors import RestoreError
from parbackup.model import Kind, RecordRef
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.readback.core import read_back, warm_up
from parbackup.readback.options import RestoreOptions, RestoreReport
from parbackup.readback.recover import recovered
from parbackup.readback.select import covered, records_by_label, restorable_set, select_files
from parbackup.readback.sinks import BlockSinkSpec
from parbackup.sources.blockdev import device_size, is_block_device


def run_image_restore(
    catalog: Catalog, options: RestoreOptions, on_event: EventSink = ignore
) -> RestoreReport:
    """Write the one selected image of a set onto the block device ``options.target``."""
    started = time.monotonic()
    warm_up()
    if not is_block_device(options.target):
        raise RestoreError(f"{options.target} is not a block device")
    info = restorable_set(catalog, options.set_ref)
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
    with _claimed(options.target):
        return _write_image(catalog, options, info.id, image, on_event, started)


@contextlib.contextmanager
def _claimed(target: str) -> Iterator[None]:
    """Hold ``target`` with an exclusive open while the image is written: the kernel
    refuses it (EBUSY) when the device is mounted or held (LVM, RAID, dm, another
    exclusive open), and refuses to mount it meanwhile. The readers still write it."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise RestoreError(
                f"{target} is in use (mounted, or held by LVM, RAID or another program):"
                " not written"
            ) from exc
        raise RestoreError(f"{target}: {exc.strerror or exc}") from exc
    try:
        yield
    finally:
        os.close(fd)


def _write_image(
    catalog: Catalog,
    options: RestoreOptions,
    info_id: str,
    image: CatalogFile,
    on_event: EventSink,
    started: float,
) -> RestoreReport:
    """Read the image's records onto the claimed block device (``run_image_restore``)."""
    report = RestoreReport(set_id=info_id, target=options.target)
    records = records_by_label(catalog, info_id, {image.file_id})
    on_event(Started("restore", 1, image.entry.size, tuple(sorted(records))))
    refs: list[RecordRef] = [ref for recs in records.values() for _fid, ref in recs]
    if not covered(refs, image.entry.size):
        report.damage(image.entry.path, "", "records missing from the catalog")
        report.seconds = time.monotonic() - started
        return report
    spec = BlockSinkSpec(options.target)
    known = catalog.device_urls()
    with recovered(catalog, info_id, known, options.devices) as rescue:
        outcome = read_back(
            bytes.fromhex(info_id),
            records,
            known,
            tuple(rescue.urls) + tuple(options.devices),  # stand-ins win over -d
            lambda _label: spec,
            on_event,
            codec=options.codec,
        )
    report.rebuilt = sorted(rescue.missing)
    if outcome.ok(image.file_id, len(records)):
        report.files, report.bytes = 1, image.entry.size
        on_event(FileDone(image.entry.path))
    else:
        device, error = outcome.damaged.get(image.file_id, ("", "not restored"))
        report.damage(image.entry.path, device, error)
    report.seconds = time.monotonic() - started
    return report
