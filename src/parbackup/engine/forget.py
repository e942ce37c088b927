"""``forget``: retire the restorable sets a retention policy does not keep (M1).

Which sets go is decided by plan/retention.py (pure, restic's semantics) over the
catalog's restorable sets, grouped by their sources. Forgetting only changes the
catalog: the sets it retires become 'forgotten' in one transaction, under the run lock
(so it never races a backup or a prune), and a kill at any moment leaves either all of
them forgotten or none. A forgotten set is no longer a root of catalog/liveness.py, so
the next prune reclaims its volumes, except the records a kept (incremental) set reuses:
those stay live, and readable for that set, until nothing needs them.

Interrupted, failed and running sets are not the policy's business (``prune``
cleans up after them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from parbackup.catalog import Catalog, SetInfo
from parbackup.catalog.liveness import RESTORABLE
from parbackup.devices.url import redact
from parbackup.engine.recovery import PruneReport, prune_orphans
from parbackup.errors import CatalogError
from parbackup.plan.retention import Decision, Policy, SetPoint, apply_policy
from parbackup.progress import EventSink, Notice, ignore
from parbackup.sources.registry import is_remote

log = logging.getLogger(__name__)


class GroupBy(StrEnum):
    """How sets are grouped before the policy is applied to each group."""

    SOURCES = "sources"
    """Sets of exactly the same sources form a group (the default)."""
    NONE = "none"
    """All restorable sets form one group."""


def set_time(info: SetInfo) -> datetime:
    """A set's time, in the local time zone (its periods are counted there, as restic
    does); a time stored without a zone is taken as UTC (the catalog writes UTC)."""
    try:
        when = datetime.fromisoformat(info.created)
    except ValueError as exc:
        raise CatalogError(f"set {info.id} has an unreadable time {info.created!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone()


def group_of(info: SetInfo, group_by: GroupBy) -> str:
    """The group key of a set: its sorted sources as JSON, or '' for one group."""
    return json.dumps(sorted(info.sources)) if group_by is GroupBy.SOURCES else ""


def group_sources(key: str) -> list[str] | None:
    """The sources a group key (``group_of``) stands for; None for the one group of all."""
    return json.loads(key) if key else None


def source_names(names: Sequence[str]) -> list[str]:
    """Sources as a backup records them (absolute local paths, redacted URLs), sorted."""
    return sorted(
        redact(n) if is_remote(n) else os.path.abspath(n.removeprefix("file://")) for n in names
    )


def decide(
    catalog: Catalog, policy: Policy, group_by: GroupBy, sources: Sequence[str] = ()
) -> list[Decision]:
    """The policy's decision for every restorable set of the catalog (none refused);
    with ``sources``, only for the sets of exactly those sources (a profile's)."""
    only = source_names(sources) if sources else None
    points = [
        SetPoint(info.id, set_time(info), group_of(info, group_by), seq)
        for seq, info in enumerate(catalog.sets())
        if info.status in RESTORABLE and (only is None or sorted(info.sources) == only)
    ]
    return apply_policy(points, policy)


@dataclass
class ForgetReport:
    """What ``forget`` decided and did; ``to_json`` gives its ``--json`` document."""

    dry_run: bool
    decisions: list[Decision]
    forgotten: list[str] = field(default_factory=list)
    prune: PruneReport | None = None

    @property
    def exit_code(self) -> int:
        """0, or 3 when the prune after it could not reach a device."""
        return 3 if self.prune is not None and self.prune.exit_code else 0

    def to_json(self) -> dict:
        groups: dict[str, dict] = {}
        for d in self.decisions:
            g = groups.setdefault(
                d.set.group, {"sources": group_sources(d.set.group), "keep": [], "remove": []}
            )
            item = {"set": d.set.id, "time": d.set.time.isoformat(timespec="seconds")}
            if d.keep:
                g["keep"].append({**item, "reasons": list(d.reasons)})
            else:
                g["remove"].append(item)
        return {
            "status": "dry-run" if self.dry_run else ("warnings" if self.exit_code else "ok"),
            "dry_run": self.dry_run,
            "groups": list(groups.values()),
            "forgotten": self.forgotten,
            "prune": None if self.prune is None else self.prune.to_json(),
        }


def forget(
    catalog: Catalog,
    policy: Policy,
    *,
    group_by: GroupBy = GroupBy.SOURCES,
    dry_run: bool = False,
    prune: bool = False,
    overrides: Sequence[str] = (),
    on_event: EventSink = ignore,
    sources: Sequence[str] = (),
    max_unused: float = 0.0,
) -> ForgetReport:
    """Apply ``policy``: mark every restorable set it does not keep 'forgotten', in one
    transaction under the run lock; with ``prune``, then reclaim what no live set needs
    (``prune_orphans``, on every reachable device; ``overrides``: moved devices;
    ``max_unused``: its compaction limit).

    ``dry_run`` decides and reports without taking the lock or changing anything.
    ``sources`` limits the policy to the sets of exactly those sources.
    Refuses (UsageError) a policy that keeps nothing.
    """
    policy.check()
    if dry_run:
        decisions = decide(catalog, policy, group_by, sources)
        return ForgetReport(True, decisions)
    catalog.lock_for_run()
    log.info("holding the run lock of %s", catalog.path)
    try:
        if prune:  # refused before anything is forgotten while a restore reads
            catalog.read_lock.exclusive()
        decisions = decide(catalog, policy, group_by, sources)  # under the lock: nothing moves now
        gone = {d.set.id for d in decisions if not d.keep}
        report = ForgetReport(False, decisions)
        if gone:
            on_event(Notice(f"forgetting {len(gone)} set(s)"))
            report.forgotten = catalog.mark_forgotten(gone)
            on_event(Notice(f"forgot {len(report.forgotten)} set(s)"))
        if prune:
            report.prune = prune_orphans(catalog, overrides, on_event, max_unused=max_unused)
    finally:
        catalog.read_lock.release()
        catalog.run_lock.release()
    return report
