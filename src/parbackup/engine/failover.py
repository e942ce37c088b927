"""Failover: a device that failed or hung is given up and its work replanned (R1-R3).

The backup run (engine/backup.py ``_Run``) calls ``fail_device`` when a writer reports a
fatal error or stops making progress for ``device_timeout`` seconds. Everything the
device was given goes to the survivors: its queued items, the item in flight and what it
had already written, durable or not; its records leave the catalog, so a degraded set
never needs the failed device (see docs/FAILURES.md). The survivors are replanned with
the same strategy and order, counting what each already holds (``survivor_slots``).

``run`` is the engine's ``_Run``: ``alive``, ``devices``, ``writers``, ``reports``,
``outstanding`` (each writer's queue, head = the item being written), ``head_done``
(bytes of the head item written), ``pending``/``kept`` (records not yet / already
durable), ``assigned`` (bytes given to each device), ``file_errors``, ``catalog``,
``options``, ``pacer`` and ``reserve(n)`` (room to keep free per device for n devices).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from parbackup.engine import balance
from parbackup.engine.devices import close_quietly
from parbackup.engine.writer import STOP
from parbackup.errors import BackupFailedError, PlanError
from parbackup.model import Item, Piece, Slot
from parbackup.plan import coalesce, replan
from parbackup.progress import DeviceFailed

log = logging.getLogger(__name__)


def fail_device(run: Any, dev: int, error: str) -> None:
    """Give a device up and replan everything it wrote or was to write (R1-R3).

    Its records leave the catalog, even durable ones: the set must not depend on a
    device that failed. The device is closed in the background; a hung one may never
    answer, and must not hold the run up.
    """
    run.alive.discard(dev)
    report = run.reports[dev]
    error = reason_of(report.url, error)
    report.status, report.error = "failed", error
    report.failed_at = round(time.monotonic() - run.started, 3)
    report.failed_utc = datetime.now(UTC).isoformat(timespec="seconds")
    run.writers[dev].cancelled.set()
    run.writers[dev].inbox.put(STOP)
    written = run.kept[dev] + run.pending[dev]
    lost = [Piece(fid, ref.offset, ref.size) for fid, ref in written]  # type: ignore[attr-defined]
    if run.kept[dev]:
        run.catalog.drop_records(run.set_hex, run.devices[dev].label.label)
    report.bytes, report.segments = 0, 0
    queued = list(run.outstanding[dev])
    if queued:
        head, done = queued[0], run.head_done[dev]
        lost.append(Piece(head.file, head.offset + done, head.size - done))
        lost.extend(Piece(i.file, i.offset, i.size) for i in queued[1:])
    run.pending[dev], run.kept[dev], run.outstanding[dev] = [], [], deque()
    lost = [p for p in lost if p.file not in run.file_errors]
    redirected = sum(p.size for p in lost)
    log.warning("device failed: %s: %s (%d bytes to redirect)", report.url, error, redirected)
    run.on_event(DeviceFailed(report.url, error, redirected))
    device = run.devices[dev].device
    threading.Thread(
        target=close_quietly, args=(device, 0), name=f"close-{dev}", daemon=True
    ).start()
    if not run.alive or not lost:
        return
    survivors = sorted(run.alive)
    slots = survivor_slots(run, survivors)
    try:
        new = replan(coalesce(lost), slots, run.options.strategy, run.options.order)
    except PlanError as exc:
        raise BackupFailedError(
            f"{report.url} failed ({error}) and the other devices cannot take its "
            f"{redirected} bytes: {exc}"
        ) from exc
    items = [Item(i.file, i.offset, i.size, survivors[i.device]) for i in new.items]
    for item in items:
        url = run.reports[item.device].url
        report.redirected[url] = report.redirected.get(url, 0) + item.size
    log.info(
        "redirected %d bytes from %s: %s",
        redirected,
        report.url,
        ", ".join(f"{n} to {u}" for u, n in report.redirected.items()),
    )
    run.assign(items)


def survivor_slots(run: Any, survivors: list[int]) -> list[Slot]:
    """The survivors as the replan sees them (R3).

    Balancing bytes, a survivor's load is all it was given in this run, so the final
    loads come out level. Balancing time (``--balance time``), it is the work it has
    left and its weight its observed rate, so that all finish together. Its room is
    what the plan left it, minus the larger reserve for headers and the catalog copy
    that fewer devices now have to carry.
    """
    reserve = run.reserve(len(survivors))
    rates: dict[int, float] = {}
    if run.pacer is not None:
        done = {d: run.reports[d].bytes for d in survivors}
        busy = {d: None if run.outstanding[d] else run.writers[d].busy_seconds for d in survivors}
        rates = run.pacer.rates(time.monotonic() - run.started, done, busy)
    slots = []
    for s in survivors:
        free = run.devices[s].space.free
        room = None if free is None else max(0, free - reserve - run.assigned[s])
        if s in rates:
            load = max(0, run.assigned[s] - run.reports[s].bytes)
            slots.append(Slot(room=room, load=load, weight=max(rates[s], balance.MIN_RATE)))
        else:
            slots.append(Slot(room=room, load=run.assigned[s]))
    return slots


def reason_of(url: str, error: str) -> str:
    """The error without the device URL in front (the report names the device already)."""
    return error.removeprefix(f"{url}: ")
