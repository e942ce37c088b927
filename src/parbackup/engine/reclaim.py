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
   A live file's kind-8 "meta" record (its extended attributes, which the catalog's
   ``records`` table does not list) lies right after the file's record it follows and
   is copied with it, so a catalog rebuilt from the compacted device still has them.

A kill at any moment leaves either the old volume in use and a new one no row points at
(deleted by the next clean-up), or the new one in use and the old one dead.

Writes a killed run never committed (``Device.unfinished``: open multipart uploads on S3,
``.tmp-`` files of a catalog copy, a key file's copy or a label) are discarded too: those
of a set the catalog knows and that is not running, and those of a catalog copy, a key
copy (a killed ``key remove``) or a label (the caller holds the run lock, so no catalog
or key copy is being written); nothing else. A set's
leftovers whose set the catalog does not know are foreign and stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.catalog.liveness import (
    DevicePlan,
    SetNode,
    SetStatus,
    VolumeUse,
    compacted_name,
    forgettable,
    plan_device,
)
from parbackup.devices.base import LABEL_NAME, Device
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError, FormatError
from parbackup.format import (
    MAX_NAME,
    RECORD_FIXED_SIZE,
    RecordHeader,
    checksum,
    decode_record_header,
    end_record,
    parse_record_header,
    read_volume_header,
    record_length,
)
from parbackup.progress import EventSink, Notice, ignore
from parbackup.xattrs import MAX_META


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
    actions: list[Action] = field(default_factory=list)
    """Every volume deleted or compacted (or, in a dry run, that would be)."""
    discarded: dict[str, list[str]] = field(default_factory=dict)
    """URL -> unfinished writes discarded (open uploads, ``.tmp-`` files)."""

    def did(self, url: str, volume: str, action: str, freed: int) -> None:
        """Count ``volume`` on ``url`` as deleted or compacted (``action``), ``freed`` bytes."""
        (self.deleted if action == "delete" else self.compacted).setdefault(url, []).append(volume)
        self.actions.append(Action(url, volume, action, freed))
        self.bytes += freed

    def could_not(self, what: str, dev: OpenDevice, exc: Exception, on_event: EventSink) -> None:
        """Say that ``what`` (an action and its object) failed on ``dev``; keep why."""
        on_event(Notice(f"could not {what} on {dev.url}: {exc}"))
        self.failed[dev.url] = str(exc)


@dataclass(frozen=True)
class Action:
    """One volume reclaimed: on which device, ``delete`` or ``compact``, bytes freed."""

    url: str
    volume: str
    action: str
    bytes: int

    def to_json(self) -> dict:
        return {"device": self.url, "volume": self.volume, "action": self.action,
                "bytes": self.bytes}  # fmt: skip


READ_BATCH = 8 << 20
"""Live records lying back to back are read from the old volume in one request of up
to this many bytes (one ranged GET on S3 instead of one per record)."""


META_SPAN = 256 << 10
"""At least the largest kind-8 record (header with a 64 KiB path, 64 KiB of attributes,
sealed): compaction reads this far past a live record to find the meta record after it."""
assert META_SPAN >= RECORD_FIXED_SIZE + 16 + 2 * MAX_NAME + MAX_META + 128


def read_batches(
    extents: Sequence[tuple[int, int, bytes]], limit: int = READ_BATCH, gap: int = 0
) -> list[list[tuple[int, int, bytes]]]:
    """Group ``extents`` (by position) into runs whose records lie at most ``gap`` bytes
    apart (0: back to back) and that together span at most ``limit`` bytes (a single
    larger record is a run of its own)."""
    runs: list[list[tuple[int, int, bytes]]] = []
    start = 0
    for ext in extents:
        position, length, _ = ext
        if runs:
            last_pos, last_len, _ = runs[-1][-1]
            end = last_pos + last_len
            if end <= position <= end + gap and position + length - start <= limit:
                runs[-1].append(ext)
                continue
        runs.append([ext])
        start = position
    return runs


def meta_after(block: memoryview, record: RecordHeader) -> memoryview | None:
    """The kind-8 record at the start of ``block`` if it is ``record``'s file's (same
    set id and file id) and lies whole in ``block``; None for anything else (another
    record, a cut volume's end, damage: the catalog still has the attributes)."""
    if len(block) < RECORD_FIXED_SIZE or bytes(block[6:8]) != b"\x08\x00":
        return None
    try:
        meta = parse_record_header(block)
    except FormatError:
        return None
    if meta.kind != "meta" or (meta.set_id, meta.file_id) != (record.set_id, record.file_id):
        return None
    length = record_length(meta)
    if length > len(block):
        return None
    payload = block[length - meta.stored_size : length]
    if meta.stored < 0 and checksum(payload) != meta.checksum:
        return None  # a sealed one is authenticated when decoded
    return block[:length]


def compact_volume(
    catalog: Catalog, device: Device, label: str, volume: str, root_ids: Set[str]
) -> str:
    """Copy the live records of ``volume`` into a new volume, switch, delete the old one.

    Every copied record is checked (header CRC, payload BLAKE3 against the catalog's
    checksum) as it is copied: a damaged one stops the compaction, the new volume is
    aborted and the old one stays. The new volume is committed before the catalog's
    rows switch to it (one transaction), and the old one is deleted only after that.
    Records lying close together are read together (``read_batches``), with the bytes
    after each, where a live file's meta record lies (``meta_after``): it is copied
    too. Returns the new volume's name.
    """
    extents = catalog.live_extents(root_ids, label, volume)
    with device.open_read(volume, 64 * 1024) as stream:
        head = read_volume_header(stream)
    size = device.size(volume)
    new = compacted_name(volume)
    writer = device.create(new)
    moves: dict[int, int] = {}
    metas = 0
    try:
        writer.write(device.read(volume, 0, head.length))
        at = head.length
        for run in read_batches(extents, gap=META_SPAN):
            start = run[0][0]
            end = min(size, run[-1][0] + run[-1][1] + META_SPAN)
            block = memoryview(device.read(volume, start, end - start))
            nexts = [p for p, _, _ in run[1:]] + [end]
            for (position, length, expected), following in zip(run, nexts, strict=True):
                data = block[position - start : position - start + length]
                if len(data) != length:
                    raise FormatError(f"{volume}: record at {position} is cut short")
                header = parse_record_header(data)
                payload = data[length - header.stored_size :]
                plain = header.stored < 0  # a version-4 payload is checked after decoding
                if header.checksum != expected or (plain and checksum(payload) != expected):
                    raise FormatError(f"{volume}: record at {position} is damaged")
                writer.write(data)
                moves[position] = at
                at += length
                meta = meta_after(block[position + length - start : following - start], header)
                if meta is not None:
                    writer.write(meta)
                    at += len(meta)
                    metas += 1
        writer.write(end_record(head.set_id, len(extents) + metas).encode())
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
    *,
    max_unused: float = 0.0,
    dry_run: bool = False,
) -> Reclaimed:
    """Delete, on ``devices``, everything no live set needs (see the module docstring).

    ``keep``: sets to treat as roots besides the catalog's own (the sets a starting run
    is about to reuse records from). ``max_unused``: a partly live volume is compacted
    only when more than this percentage of it is unused (``liveness.worth_compacting``).
    ``dry_run``: decide and report (``actions``, ``bytes``), change nothing. The caller
    holds the catalog's run lock (not needed for a dry run).
    """
    nodes = catalog.set_nodes()
    root_ids = catalog.root_ids(keep)
    # 1. the catalog stops pointing into dead sets' volumes
    if not dry_run:
        catalog.drop_dead_records({n.id for n in nodes} - root_ids)
    by_id = {n.id: n for n in nodes}
    whole = root_ids | catalog.pinned_ids(keep)
    # only volumes a plan may touch need their live bytes counted
    touchable = {n.id for n in nodes if n.id not in whole or n.failed_labels}
    use = catalog.live_use(root_ids, touchable)
    # a set with parity: its volumes are never compacted (the parity rows cover their
    # bytes as written), and its parity volumes stay while any of its records is live.
    # A set the catalog gives no stripe (a killed run: the stripe is recorded only once
    # its parity is durable) protects nothing: its parity volumes go, even while a later
    # set reuses its records.
    parity_sets = {n.id for n in nodes if catalog.parity(n.id)}
    needed = (whole | catalog.referenced_sets(root_ids)) & parity_sets
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
            max_unused=max_unused,
            uncompactable=parity_sets,
            parity_needed=needed,
        )
        for set_id in plan.foreign:
            out.foreign.setdefault(set_id, []).append(dev.url)
        if dry_run:
            metas = {n: _meta_bytes(catalog, dev.device, label, n, root_ids) for n in plan.compact}
            _would(dev, plan, dict(objects), use.get(label, {}), metas, out)
        else:
            done = _carry_out(catalog, dev, plan, root_ids, out, on_event)
            if _discard_unfinished(dev, by_id, out, on_event) and done:
                out.cleaned.add(label)
    return out


def _meta_bytes(
    catalog: Catalog, device: Device, label: str, volume: str, root_ids: Set[str]
) -> int | str:
    """Bytes of the meta records ``compact_volume`` would copy along (``meta_after``),
    reading only the header of each live record with bytes after it, and those bytes;
    or why they could not be read."""
    extents = catalog.live_extents(root_ids, label, volume)
    total = 0
    try:
        size = device.size(volume)
        for i, (position, length, _) in enumerate(extents):
            end = position + length
            following = extents[i + 1][0] if i + 1 < len(extents) else size
            span = min(following, end + META_SPAN) - end
            if span < RECORD_FIXED_SIZE:
                continue
            head = device.read(volume, position, RECORD_FIXED_SIZE)
            at = position + RECORD_FIXED_SIZE
            header = decode_record_header(head, lambda n, at=at: device.read(volume, at, n))
            meta = meta_after(memoryview(device.read(volume, end, span)), header)
            total += 0 if meta is None else len(meta)
    except (DeviceError, FormatError) as exc:
        return str(exc)
    return total


def _would(
    dev: OpenDevice,
    plan: DevicePlan,
    sizes: dict[str, int],
    use: Mapping[str, VolumeUse],
    metas: Mapping[str, int | str],
    out: Reclaimed,
) -> None:
    """Record, without acting, what ``plan`` would delete and compact on one device, and
    the bytes that would be freed (a compacted volume keeps its header, its live records,
    the meta records after them (``metas``) and an end record: the header is read to
    count them exactly)."""
    url = dev.url
    for name in plan.delete:
        out.did(url, name, "delete", sizes.get(name, 0))
    for name in plan.compact:
        try:
            with dev.device.open_read(name, 64 * 1024) as stream:
                head = read_volume_header(stream)
        except (DeviceError, FormatError) as exc:
            out.failed[url] = str(exc)
            continue
        meta = metas.get(name, 0)
        if isinstance(meta, str):
            out.failed[url] = meta
            continue
        kept = head.length + use[name].live_bytes + meta
        kept += len(end_record(head.set_id, use[name].records).encode())
        out.did(url, name, "compact", max(0, sizes.get(name, 0) - kept))


def _discard_unfinished(
    dev: OpenDevice, by_id: dict[str, SetNode], out: Reclaimed, on_event: EventSink
) -> bool:
    """Discard what killed writers left unfinished on one device (see the module
    docstring); False if something could not be listed or discarded."""
    try:
        leftovers = dev.device.unfinished("")
    except DeviceError as exc:
        out.could_not("list unfinished writes", dev, exc, on_event)
        return False
    ok = True
    for info in leftovers:
        parts = info.name.split("/")
        if parts[0] == "sets":
            node = by_id.get(parts[1]) if len(parts) > 2 else None
            if node is None or node.status == SetStatus.RUNNING:
                continue  # another catalog's, or this run's own
        elif parts[0] not in ("catalog", "keys") and not info.name.startswith(LABEL_NAME):
            continue  # not parbackup's (a bucket shared with other uploads)
        try:
            dev.device.discard(info.name)
        except DeviceError as exc:
            out.could_not(f"discard the unfinished {info.name}", dev, exc, on_event)
            ok = False
            continue
        out.discarded.setdefault(dev.url, []).append(info.name)
    if dev.url in out.discarded:
        n = len(out.discarded[dev.url])
        on_event(Notice(f"{dev.url}: discarded {n} unfinished write(s) of killed runs"))
    return ok


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
    deleted = compacted = 0
    for name in plan.delete:
        try:
            dev.device.delete(name)
        except DeviceError as exc:
            out.could_not(f"delete {name}", dev, exc, on_event)
            ok = False
            continue
        out.did(dev.url, name, "delete", sizes.get(name, 0))
        deleted += 1
    for name in plan.compact:
        before = sizes.get(name, 0)
        try:
            new = compact_volume(catalog, dev.device, plan.label, name, root_ids)
            after = dev.device.size(new)
        except (DeviceError, FormatError) as exc:
            out.could_not(f"compact {name}", dev, exc, on_event)
            ok = False
            continue
        out.did(dev.url, name, "compact", max(0, before - after))
        compacted += 1
    if plan.delete or plan.compact:  # what was done, not what was planned
        on_event(
            Notice(
                f"{dev.url}: deleted {_of(deleted, len(plan.delete))} dead volume(s),"
                f" compacted {_of(compacted, len(plan.compact))} partly used one(s)"
            )
        )
    return ok


def _of(done: int, planned: int) -> str:
    """``done``, or ``done of planned`` when some could not be done."""
    return str(done) if done == planned else f"{done} of {planned}"


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
