"""Which sets and volumes are alive: the one place every deletion asks.

The **roots** are the restorable sets (complete, degraded; never forgotten ones), the
running set, the sets a running set resumed (the chain of interrupted runs it reuses
from), and whatever a caller asks to keep (the sets a run is about to reuse records
from, before its own rows reference them). A record is **live** when a root lists it; it
may lie in the volume of an earlier, dead set (``records.origin_set``: a resumed or
incremental set points into its predecessor's volumes). Nothing else is needed by
anybody.

A running run may hold positions of records it is about to reuse in memory, so the
sets it reads from are **pinned** while it runs: the running set, the chain it resumed,
what the caller keeps, and every set their rows point into. A pinned set's volumes are
not compacted (nothing moves under the run); once the run is over only their live part
stays.

From that, per device label, a volume is:

- **whole** (kept as it is): it belongs to a root or pinned set, except the volume a
  restorable set left on a device that failed during its run when no live record lies
  there (the engine took that device's records out of the set);
- **partly live**: a dead set's volume that live records still lie in; what lies
  between them is garbage, reclaimed by *compaction* (copy the live records into a new
  volume, switch the catalog to it, then delete the old one) when its unused share
  exceeds the caller's limit (``prune --max-unused``) and more than FRAMING_SLACK, unless
  the device is sequential (a tape cannot be compacted);
- **dead**: nothing live lies in it: deleted whole.

A **tape** is never compacted nor deleted from: it is **free** (``free_tapes``) once no
root lists a record on it and no root or pinned set wrote to it; its next backup
rewrites it whole.

Volumes of sets the catalog does not know are **foreign** and never touched: they may
belong to another catalog sharing the device.

This module is pure: the catalog reads the rows, this decides, the engine acts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum


class SetStatus(StrEnum):
    """What the catalog stores in ``sets.status``."""

    RUNNING = "running"
    """Its run is writing it (or died and nobody has noticed yet: see lock_for_run)."""
    COMPLETE = "complete"
    DEGRADED = "degraded"
    """Restorable, but a device failed during the run (its share was written elsewhere)."""
    INTERRUPTED = "interrupted"
    """Its run died; never restored, possibly resumed by a later run."""
    FAILED = "failed"
    """Every device failed; nothing of it is restorable."""
    FORGOTTEN = "forgotten"
    """Was restorable; ``forget`` retired it. Not a root: what no live set reuses of it
    goes at the next prune, and the set leaves the catalog once nothing points into it."""

    @property
    def restorable(self) -> bool:
        return self in (SetStatus.COMPLETE, SetStatus.DEGRADED)


RESTORABLE = frozenset({SetStatus.COMPLETE, SetStatus.DEGRADED})


@dataclass(frozen=True)
class SetNode:
    """One set as liveness sees it: id, status, the set its run resumed ('' if none)."""

    id: str
    status: SetStatus
    resumed: str = ""
    failed_labels: frozenset[str] = frozenset()
    """Devices that failed during this set's run (their volumes hold nothing of it)."""


def resumed_chain(sets: Iterable[SetNode]) -> frozenset[str]:
    """The sets a running run resumed, and the sets *they* resumed, and so on.

    A run may reuse records from the whole chain (a run killed before its own rows were
    written passes on what the run it resumed had made durable), so all of it lives
    while the run runs.
    """
    nodes = {s.id: s for s in sets}
    out: set[str] = set()
    for s in nodes.values():
        if s.status is not SetStatus.RUNNING:
            continue
        at = s.resumed
        while at in nodes and at not in out:
            out.add(at)
            at = nodes[at].resumed
    return frozenset(out)


def roots(sets: Iterable[SetNode], keep: Set[str] = frozenset()) -> frozenset[str]:
    """The ids of the root sets: restorable, running, the chain a running run resumed
    (``resumed_chain``), and ``keep``.

    The sets a *running* run resumed stay roots as a whole until that run is over,
    because the reused records enter the new set's rows only as the run goes; once the
    run has finished (or died) its own rows say exactly what it needs.
    """
    nodes = {s.id: s for s in sets}
    out = {s.id for s in nodes.values() if s.status.restorable or s.status is SetStatus.RUNNING}
    out |= resumed_chain(nodes.values())
    out |= set(keep)
    return frozenset(i for i in out if i in nodes)


def running_ids(sets: Iterable[SetNode], keep: Set[str] = frozenset()) -> frozenset[str]:
    """The running sets, the chains they resumed, and ``keep``: whose rows a running run
    may be reading; with the sets those rows point into they are *pinned* (``pinned``)."""
    nodes = list(sets)
    known = {s.id for s in nodes}
    out = {s.id for s in nodes if s.status is SetStatus.RUNNING}
    out |= resumed_chain(nodes)
    out |= set(keep)
    return frozenset(i for i in out if i in known)


def pinned(running: Set[str], referenced: Set[str]) -> frozenset[str]:
    """Sets whose volumes must stay whole now: ``running`` (``running_ids``) and the sets
    their rows point into (``referenced``, read from the catalog for those sets)."""
    return frozenset(running) | frozenset(referenced)


def set_of_volume(name: str) -> str | None:
    """The set id of a volume named ``sets/<id>/<name>.pbv``; None for other objects."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "sets" or not parts[2].endswith(".pbv"):
        return None
    return parts[1]


@dataclass(frozen=True)
class VolumeUse:
    """What live records occupy in one volume: how many, and their bytes (headers too)."""

    records: int
    live_bytes: int


@dataclass(frozen=True)
class Extent:
    """One record's bytes in a volume: where it starts and how long it is."""

    label: str
    volume: str
    position: int
    length: int


def volume_use(extents: Iterable[Extent]) -> dict[str, dict[str, VolumeUse]]:
    """label -> volume -> use, counting a record listed by several sets once."""
    seen: dict[tuple[str, str], dict[int, int]] = {}
    for e in extents:
        seen.setdefault((e.label, e.volume), {})[e.position] = e.length
    out: dict[str, dict[str, VolumeUse]] = {}
    for (label, volume), at in seen.items():
        out.setdefault(label, {})[volume] = VolumeUse(len(at), sum(at.values()))
    return out


FRAMING_SLACK = 64 * 1024
"""Bytes of a volume that are not records and never garbage: its header (set metadata
as JSON, normally well under 1 KiB) and its end record. A partly live volume is compacted
only when more than this lies in it beyond its live records."""


@dataclass
class DevicePlan:
    """What to do on one device (one label)."""

    label: str
    delete: list[str] = field(default_factory=list)
    """Volumes nothing live lies in: delete whole."""
    compact: list[str] = field(default_factory=list)
    """Dead sets' volumes holding some live records and at least FRAMING_SLACK garbage."""
    keep: list[str] = field(default_factory=list)
    foreign: dict[str, list[str]] = field(default_factory=dict)
    """set id -> volumes of sets this catalog does not know (never touched)."""
    garbage: int = 0
    """Bytes this plan reclaims (whole dead volumes plus what compaction drops)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Volume to compact -> its unused bytes (what compaction drops, framing aside)."""
    left: int = 0
    """Garbage bytes the plan cannot reclaim (a tape's partly live volumes)."""


def plan_device(
    label: str,
    objects: Iterable[tuple[str, int]],
    sets: Mapping[str, SetNode],
    whole: Set[str],
    use: Mapping[str, VolumeUse],
    *,
    sequential: bool = False,
    slack: int = FRAMING_SLACK,
    max_unused: float = 0.0,
) -> DevicePlan:
    """Decide, for every volume (name, size) on device ``label``, delete/compact/keep.

    ``use`` is this label's live use per volume (``volume_use``); ``sets`` every set the
    catalog knows; ``whole`` the roots and pinned sets, whose own volumes stay whole.
    A partly live volume is compacted only when its unused bytes exceed both ``slack``
    and ``max_unused`` percent of its size (``worth_compacting``).
    Pure; the caller deletes only after the catalog has committed.
    """
    plan = DevicePlan(label)
    for name, size in sorted(objects):
        set_id = set_of_volume(name)
        if set_id is None:
            continue
        node = sets.get(set_id)
        if node is None:
            plan.foreign.setdefault(set_id, []).append(name)
            continue
        live = use.get(name)
        if set_id in whole and not (
            live is None and node.status.restorable and label in node.failed_labels
        ):
            plan.keep.append(name)
        elif live is None:
            plan.delete.append(name)
            plan.garbage += size
        elif worth_compacting(size, live.live_bytes, slack, max_unused):
            if sequential:
                plan.keep.append(name)
                plan.left += size - live.live_bytes
            else:
                plan.compact.append(name)
                plan.garbage += size - live.live_bytes
                plan.dropped[name] = size - live.live_bytes
        else:
            plan.keep.append(name)
    return plan


def worth_compacting(size: int, live_bytes: int, slack: int, max_unused: float) -> bool:
    """Whether a partly live volume of ``size`` bytes, ``live_bytes`` of them live, is
    compacted: its unused bytes exceed ``slack`` and ``max_unused`` percent of ``size``
    (restic's ``--max-unused``, per volume: 0 compacts whatever exceeds the slack, 100
    never compacts)."""
    unused = size - live_bytes
    return unused > slack and unused * 100 > max_unused * size


def free_tapes(
    tapes: Mapping[str, str], live_labels: Set[str], busy_labels: Set[str]
) -> dict[str, list[str]]:
    """URL -> labels of every tape nothing live is on, from ``tapes`` (label -> URL last
    seen at). A label is free when no root lists a record on it (``live_labels``) and no
    root or pinned set wrote to it (``busy_labels``: a running set's records may not be
    in the catalog yet). Every backup starts a tape afresh with a new label, so one URL
    may have had several: the tape there is free only when all of them are (a live one
    means the tape holds it, or held it before it was overwritten)."""
    by_url: dict[str, list[str]] = {}
    for label, url in tapes.items():
        by_url.setdefault(url, []).append(label)
    return {
        url: sorted(labels)
        for url, labels in sorted(by_url.items())
        if not any(t in live_labels or t in busy_labels for t in labels)
    }


def forgettable(sets: Sequence[SetNode], root_ids: Set[str], referenced: Set[str]) -> list[str]:
    """Dead sets that may leave the catalog: not roots, and no live record lies in their
    volumes (``referenced``: origin sets of live records). Their volumes must be gone from
    every device first; the caller checks that."""
    return [s.id for s in sets if s.id not in root_ids and s.id not in referenced]


def compacted_name(volume: str) -> str:
    """The name a compacted copy of ``volume`` gets: ``x.pbv`` -> ``x.c1.pbv`` -> ``x.c2.pbv``."""
    stem = volume[: -len(".pbv")] if volume.endswith(".pbv") else volume
    base, dot, tail = stem.rpartition(".")
    if dot and tail.startswith("c") and tail[1:].isdigit():
        return f"{base}.c{int(tail[1:]) + 1}.pbv"
    return f"{stem}.c1.pbv"
