"""Deleting what no live set needs: whole dead volumes and the dead part of the rest.

The decisions are catalog/liveness.py's; this module carries them out, always in the
order *write new, switch, then delete*:

1. the rows of dead sets (not roots) are dropped from the catalog first, in one
   transaction, so nothing can resume from or restore through bytes about to go;
2. a dead volume is then deleted whole;
3. a partly live volume (a dead run's volume whose first records a later set reuses) is
   compacted: its live records are copied, byte for byte, into a new volume on the same
   device (so every checksum still holds), the new volume is committed, the catalog's
   rows are switched to it in one transaction, and only then is the old one deleted.

A kill at any moment leaves either the old volume in use and a new one no row points at
(deleted by the next clean-up), or the new one in use and the old one dead.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.catalog.liveness import DevicePlan, compacted_name, forgettable, plan_device
from parbackup.devices.base import Device
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError, FormatError
from parbackup.format import checksum, end_record, parse_record_header, read_volume_header
from parbackup.progress import EventSink, Notice, ignore


@dataclass
class Reclaimed:
    """What one pass reclaimed, per device URL, and what it could not do."""

    deleted: dict[str, list[str]] = field(default_factory=dict)
    """URL -> volumes deleted whole."""
    compacted: dict[str, list[str]] = field(default_factory=dict)
    """URL -> volumes whose dead part was dropped."""
    bytes: int = 0
    foreign: dict[str, list[str]] = field(default_factory=dict)
    """set id -> URLs holding volumes of sets this catalog does not know (left alone)."""
    failed: dict[str, str] = field(default_factory=dict)
    """URL -> why it could not be (fully) cleaned."""
    cleaned: set[str] = field(default_factory=set)
    """Labels whose every dead volume is gone."""


def compact_volume(
    catalog: Catalog, device: Device, label: str, volume: str, root_ids: Set[str]
) -> str:
    """Copy the live records of ``volume`` into a new volume, switch, delete the old one.

    Every copied record is checked (header CRC, payload BLAKE3 against the catalog's
    checksum) first: a damaged one stops the compaction and the old volume stays.
    Returns the new volume's name.
    """
    extents = catalog.live_extents(root_ids, label, volume)
    with device.open_read(volume, 64 * 1024) as stream:
        head = read_volume_header(stream)
    new = compacted_name(volume)
    writer = device.create(new)
    moves: dict[int, int] = {}
    try:
        writer.write(device.read(volume, 0, head.length))
        at = head.length
        for position, length, expected in extents:
            data = device.read(volume, position, length)
            if len(data) != length:
                raise FormatError(f"{volume}: record at {position} is cut short")
            header = parse_record_header(data)
            payload = memoryview(data)[length - header.stored_size :]
            plain = header.stored < 0  # a version-4 payload is checked after decoding
            if header.checksum != expected or (plain and checksum(payload) != expected):
                raise FormatError(f"{volume}: record at {position} is damaged")
            writer.write(data)
            moves[position] = at
            at += length
        writer.write(end_record(head.set_id, len(extents)).encode())
        writer.commit()
    except BaseException:
        writer.abort()
        device.delete(new)
        raise
    catalog.move_records(label, volume, new, moves)
    device.delete(volume)
    return new


def reclaim(
    catalog: Catalog,
    devices: Sequence[OpenDevice],
    on_event: EventSink = ignore,
    keep: Set[str] = frozenset(),
) -> Reclaimed:
    """Delete, on ``devices``, everything no live set needs (see the module docstring).

    ``keep``: sets to treat as roots besides the catalog's own (the sets a starting run
    is about to reuse records from). The caller holds the catalog's run lock.
    """
    nodes = catalog.set_nodes()
    root_ids = catalog.root_ids(keep)
    # 1. the catalog stops pointing into dead sets' volumes
    catalog.drop_dead_records({n.id for n in nodes} - root_ids)
    by_id = {n.id: n for n in nodes}
    whole = root_ids | catalog.pinned_ids(keep)
    # only volumes a plan may touch need their live bytes counted
    touchable = {n.id for n in nodes if n.id not in whole or n.failed_labels}
    use = catalog.live_use(root_ids, touchable)
    out = Reclaimed()
    for dev in devices:
        label = dev.label.label
        if dev.device.capabilities.sequential:
            # a tape can neither delete nor compact; its next backup rewrites it whole
            out.cleaned.add(label)
            continue
        try:
            objects = [(o.name, o.size) for o in dev.device.list("sets/")]
        except DeviceError as exc:
            out.failed[dev.url] = str(exc)
            continue
        plan = plan_device(
            label,
            objects,
            by_id,
            whole,
            use.get(label, {}),
        )
        for set_id in plan.foreign:
            out.foreign.setdefault(set_id, []).append(dev.url)
        if _carry_out(catalog, dev, plan, root_ids, out, on_event):
            out.cleaned.add(label)
    return out


def _carry_out(
    catalog: Catalog,
    dev: OpenDevice,
    plan: DevicePlan,
    root_ids: Set[str],
    out: Reclaimed,
    on_event: EventSink,
) -> bool:
    """Delete and compact what ``plan`` says on one device; False if something failed."""
    sizes = {o.name: o.size for o in dev.device.list("sets/")}
    ok = True
    for name in plan.delete:
        try:
            dev.device.delete(name)
        except DeviceError as exc:
            on_event(Notice(f"could not delete {name} on {dev.url}: {exc}"))
            out.failed[dev.url] = str(exc)
            ok = False
            continue
        out.deleted.setdefault(dev.url, []).append(name)
        out.bytes += sizes.get(name, 0)
    for name in plan.compact:
        before = sizes.get(name, 0)
        try:
            new = compact_volume(catalog, dev.device, plan.label, name, root_ids)
            after = dev.device.size(new)
        except (DeviceError, FormatError) as exc:
            on_event(Notice(f"could not compact {name} on {dev.url}: {exc}"))
            out.failed[dev.url] = str(exc)
            ok = False
            continue
        out.compacted.setdefault(dev.url, []).append(name)
        out.bytes += max(0, before - after)
    if plan.delete or plan.compact:
        on_event(
            Notice(
                f"{dev.url}: deleted {len(plan.delete)} dead volume(s), compacted"
                f" {len(plan.compact)} partly used one(s)"
            )
        )
    return ok


def forget_dead(
    catalog: Catalog, cleaned_labels: Set[str], keep: Set[str] = frozenset()
) -> list[str]:
    """Forget dead sets nothing live points into, once every device the catalog knows
    has been cleaned (an interrupted set may have volumes on any of them, and a set the
    catalog forgot would be foreign there for ever). Returns the ids forgotten."""
    if not set(catalog.device_urls()) <= set(cleaned_labels):
        return []
    root_ids = catalog.root_ids(keep)
    gone = forgettable(catalog.set_nodes(), root_ids, catalog.referenced_sets(root_ids))
    for set_id in gone:
        catalog.forget_set(set_id)
    return gone
