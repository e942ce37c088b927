"""Cleaning up after a backup run that died (SIGKILL, power loss): orphaned volumes.

A run that dies leaves its set 'running' in the catalog (the next run marks it
'interrupted', see catalog.lock_for_run) and partial volumes under ``sets/<id>/`` on its
devices. Nothing of such a set is ever restored. The next backup deletes those volumes
from the devices it uses (``clean_interrupted``); ``parbackup prune --orphans`` does the
same on every device the catalog knows and also removes the volumes of failed sets.
When the dead run had made whole files durable (a checkpoint), the next backup of the
same sources resumes: it reuses those files' records (``resume_reuse``) and keeps that
set's volumes; otherwise it starts cleanly. See docs/GUARANTEES.md.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.devices.base import Device
from parbackup.engine.devices import OpenDevice, close_all, devices_for_labels
from parbackup.engine.incremental import load_previous
from parbackup.errors import DeviceError
from parbackup.model import FileEntry
from parbackup.plan.reuse import Reuse, select
from parbackup.progress import EventSink, Notice, ignore

_DEAD = ("interrupted", "failed")


def delete_set_volumes(device: Device, set_id: str) -> int:
    """Delete every object of one set from a device; the number deleted."""
    names = [o.name for o in device.list(f"sets/{set_id}/")]
    for name in names:
        device.delete(name)
    return len(names)


def resume_reuse(
    catalog: Catalog, sources: Sequence[str], entries: Sequence[FileEntry]
) -> Reuse | None:
    """What the newest interrupted run of the same sources already made durable.

    Files it wrote whole, and that have not changed since (size, mtime, ctime, inode),
    are not copied again: the new set points at their records in the interrupted set's
    volumes, exactly as an incremental set points into its parent. None when there is no
    such run or it left nothing whole.
    """
    wanted = sorted(sources)
    for info in reversed(catalog.sets()):
        if info.status == "interrupted" and sorted(info.sources) == wanted:
            found = select(entries, info.id, load_previous(catalog, info.id))
            if not found.files:
                return None
            return Reuse(files=found.files, records=found.records, bytes=found.bytes)
    return None


def clean_interrupted(
    catalog: Catalog,
    devices: Sequence[OpenDevice],
    on_event: EventSink = ignore,
    keep: Set[str] = frozenset(),
) -> list[str]:
    """Delete the volumes of interrupted sets from ``devices``; forget fully cleaned sets.

    Sets in ``keep``, or whose records a set in the catalog reuses (a resumed run), are
    left alone. A set is forgotten once none of its catalogued records lies on a device
    not cleaned here. Returns the ids of the sets cleaned.
    """
    labels = {d.label.label for d in devices}
    out = []
    protected = set(keep) | catalog.origin_sets()
    for set_id in catalog.interrupted_sets():
        if set_id in protected:
            continue
        removed = 0
        for dev in devices:
            try:
                removed += delete_set_volumes(dev.device, set_id)
            except DeviceError as exc:
                on_event(Notice(f"could not delete orphaned volumes on {dev.url}: {exc}"))
                labels.discard(dev.label.label)
        if removed:
            on_event(Notice(f"removed {removed} orphaned volume(s) of interrupted set {set_id}"))
        if {ref.label for _, ref in catalog.records(set_id)} <= labels:
            catalog.forget_set(set_id)
        out.append(set_id)
    return out


@dataclass
class PruneReport:
    """What ``prune --orphans`` did; ``to_json`` gives its ``--json`` document."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    """set id -> device URLs its volumes were deleted from."""
    forgotten: list[str] = field(default_factory=list)
    foreign: dict[str, list[str]] = field(default_factory=dict)
    """Sets found on devices but unknown to this catalog (left alone): id -> URLs."""
    unreachable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "removed": self.removed,
            "forgotten": self.forgotten,
            "foreign": self.foreign,
            "unreachable": self.unreachable,
        }


def prune_orphans(
    catalog: Catalog, overrides: Sequence[str] = (), on_event: EventSink = ignore
) -> PruneReport:
    """Delete the volumes of interrupted and failed sets from every reachable device.

    Holds the catalog's run lock, so it never races a running backup. Sets whose
    volumes are gone from every device that held their records are removed from the
    catalog. Sets the catalog does not know are reported, never deleted: they may
    belong to another catalog sharing the devices.
    """
    catalog.lock_for_run()
    report = PruneReport()
    try:
        referenced = catalog.origin_sets()
        status = {s.id: s.status for s in catalog.sets() if s.id not in referenced}
        status.update({s: "referenced" for s in referenced})
        opened, missing = devices_for_labels(catalog.device_urls(), list(overrides), write=True)
        report.unreachable = {label: reason for label, reason in missing.items()}
        try:
            for label, dev in sorted(opened.items()):
                try:
                    ids = sorted({o.name.split("/")[1] for o in dev.device.list("sets/")})
                except DeviceError as exc:
                    report.unreachable[label] = str(exc)
                    continue
                for set_id in ids:
                    if set_id not in status:
                        report.foreign.setdefault(set_id, []).append(dev.url)
                    elif status[set_id] in _DEAD:
                        delete_set_volumes(dev.device, set_id)
                        report.removed.setdefault(set_id, []).append(dev.url)
                        on_event(Notice(f"removed volumes of {status[set_id]} set {set_id}"))
        finally:
            close_all(list(opened.values()))
        for set_id, st in status.items():
            if st not in _DEAD:
                continue
            holders = {ref.label for _, ref in catalog.records(set_id)}
            if not holders & set(report.unreachable):
                catalog.forget_set(set_id)
                report.forgotten.append(set_id)
    finally:
        catalog.run_lock.release()
    return report
