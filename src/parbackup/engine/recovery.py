"""After a backup run that died (SIGKILL, power loss): resuming it, and cleaning up.

A run that dies leaves its set 'running' in the catalog (the next run marks it
'interrupted', see catalog.lock_for_run) and partial volumes under ``sets/<id>/`` on its
devices. Nothing of such a set is ever restored.

**Resume.** When the newest interrupted run of the same sources is newer than their
newest restorable set and made whole files durable, the next backup reuses those files'
records (``resume_reuse``) and the catalog records which set it resumed
(``sets.resumed``): that set stays alive while the new run runs.

**Clean-up.** What is alive is decided in one place, catalog/liveness.py. The next
backup (``clean_interrupted``, on the devices it uses) and ``parbackup prune --orphans``
(``prune_orphans``, on every device the catalog knows) delete everything else through
engine/reclaim.py: whole dead volumes, and the unused part of a dead run's volumes that
a later set still partly reads. See docs/GUARANTEES.md.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.catalog.liveness import SetStatus, free_tapes
from parbackup.catalog.schema import REBUILDING_KEY
from parbackup.coverage import complete
from parbackup.engine.catalog_copy import copy_catalog
from parbackup.engine.devices import OpenDevice, close_all, devices_for_labels
from parbackup.engine.incremental import load_previous
from parbackup.engine.reclaim import Action, forget_dead, reclaim
from parbackup.entries import Entries
from parbackup.errors import CatalogError
from parbackup.model import Kind
from parbackup.plan.reuse import Previous, Reuse, select
from parbackup.progress import EventSink, ignore


@dataclass
class Resumed(Reuse):
    """A resume: what to reuse, and the id of the interrupted set it comes from."""

    resumed: str = ""


def resumable_set(catalog: Catalog, sources: Sequence[str]) -> str | None:
    """The interrupted run a new backup of ``sources`` may resume, or None.

    Only the newest set of exactly these sources qualifies, and only when it is an
    interrupted one: a restorable set newer than it (or a later interrupted run) means
    its records are no longer what the sources looked like last.
    """
    wanted = sorted(sources)
    for info in reversed(catalog.sets()):
        if sorted(info.sources) != wanted or info.status == SetStatus.FAILED:
            continue
        return info.id if info.status == SetStatus.INTERRUPTED else None
    return None


def resume_reuse(
    catalog: Catalog,
    sources: Sequence[str],
    entries: Entries,
    usable: Set[str] | None = None,
    sealed: bool | None = None,
) -> Resumed | None:
    """What the interrupted run to resume (``resumable_set``) already made durable.

    Files it wrote whole, and that have not changed since (size, mtime, ctime, inode),
    are not copied again: the new set points at their records in the interrupted set's
    volumes, exactly as an incremental set points into its parent. A run killed before
    its own rows were written still holds what the run *it* resumed made durable, so the
    chain of interrupted runs (``sets.resumed``) is followed, the newer whole copy of a
    file winning. None when there is no such run or it left nothing whole. Pass
    ``.resumed`` (the newest run of the chain) to ``Catalog.begin_set``. ``sealed``: as
    for ``load_previous`` (an encrypted run reuses only sealed records).
    """
    set_id = resumable_set(catalog, sources)
    if set_id is None:
        return None
    by_id = {s.id: s for s in catalog.sets()}
    chain: list[str] = []
    at: str = set_id
    while at in by_id and at not in chain and by_id[at].status == SetStatus.INTERRUPTED:
        chain.append(at)
        at = by_id[at].resumed
    previous: dict[str, Previous] = {}
    for older in reversed(chain):  # oldest first: a newer whole copy replaces an older one
        for path, prev in load_previous(catalog, older, usable, sealed).items():
            if prev.entry.kind is Kind.FILE and complete(prev.records, prev.entry.size):
                previous[path] = prev
    found = select(entries, set_id, previous)
    if not found.files:
        return None
    return Resumed(
        files=found.files,
        records=found.records,
        bytes=found.bytes,
        metas=found.metas,
        resumed=set_id,
    )


def clean_interrupted(
    catalog: Catalog,
    devices: Sequence[OpenDevice],
    on_event: EventSink = ignore,
    keep: Set[str] = frozenset(),
    tapes: Set[str] = frozenset(),
) -> list[str]:
    """Delete from ``devices`` what no live set needs; forget dead sets once gone.

    Call it holding the run lock, after ``begin_set`` (so the running set and the set it
    resumed are roots) and before any record of the new run is durable. ``keep``: sets
    the new run reuses records from (roots until its rows point at them). ``tapes``: the
    labels of the run's tapes, clean without being opened (their movers write them anew).
    Returns the ids of the sets forgotten.
    """
    done = reclaim(catalog, devices, on_event, keep)
    return forget_dead(catalog, done.cleaned | set(tapes), keep)


@dataclass
class PruneReport:
    """What ``prune`` did (or, with ``dry_run``, would do); ``to_json`` gives its
    ``--json`` document."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    """set id -> device URLs its volumes were deleted from."""
    compacted: dict[str, list[str]] = field(default_factory=dict)
    """set id -> device URLs where the unused part of its volumes was dropped."""
    forgotten: list[str] = field(default_factory=list)
    foreign: dict[str, list[str]] = field(default_factory=dict)
    """Sets found on devices but unknown to this catalog (left alone): id -> URLs."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """label -> why the device could not be opened."""
    problems: dict[str, str] = field(default_factory=dict)
    """label -> why a device was opened but not fully cleaned (a failed deletion, a
    damaged record that stopped a compaction: the old volume stays)."""
    reclaimed_bytes: int = 0
    dry_run: bool = False
    max_unused: float = 0.0
    volumes: list[Action] = field(default_factory=list)
    """Every volume deleted or compacted (would be, in a dry run), with the bytes freed."""
    free_tapes: dict[str, list[str]] = field(default_factory=dict)
    """URL -> labels of every tape nothing live is on: it may be reused."""

    @property
    def exit_code(self) -> int:
        """0, or 3 when a device could not be reached or fully cleaned."""
        return 3 if self.unreachable or self.problems else 0

    discarded: dict[str, list[str]] = field(default_factory=dict)
    """Device URL -> writes killed runs never finished, discarded (open S3 uploads,
    ``.tmp-`` files)."""

    def to_json(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "max_unused": self.max_unused,
            "removed": self.removed,
            "compacted": self.compacted,
            "forgotten": self.forgotten,
            "foreign": self.foreign,
            "unreachable": self.unreachable,
            "problems": self.problems,
            "reclaimed_bytes": self.reclaimed_bytes,
            "volumes": [a.to_json() for a in self.volumes],
            "free_tapes": [{"url": k, "labels": v} for k, v in self.free_tapes.items()],
            "discarded": self.discarded,
        }


def _by_set(per_url: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for url, names in per_url.items():
        for set_id in sorted({n.split("/")[1] for n in names}):
            out.setdefault(set_id, []).append(url)
    return out


def prune_orphans(
    catalog: Catalog,
    overrides: Sequence[str] = (),
    on_event: EventSink = ignore,
    *,
    max_unused: float = 0.0,
    dry_run: bool = False,
) -> PruneReport:
    """Delete what no live set needs from every reachable device the catalog knows.

    Holds the catalog's run lock, so it never races a running backup, and its readers'
    lock alone, so it never deletes from under a restore, verify or repair (each refuses
    the other at once: catalog/runlock.py). A volume partly
    needed is compacted when more than ``max_unused`` percent of it is unused. Dead sets
    whose volumes are gone and that nothing live points into are removed from the
    catalog once every known device was cleaned. Sets the catalog does not know are
    reported, never deleted: they may belong to another catalog sharing the devices.
    After a compaction or a deletion the catalog copy on every reachable disk is
    refreshed (the old copies name volumes that are gone, and after ``forget`` still
    call its sets complete). Tapes are not opened: nothing is deleted from a tape; one
    that nothing live is on is reported free (``free_tapes``). ``dry_run`` opens the
    devices for reading, takes no lock and changes nothing. Refuses a catalog a killed
    ``rebuild-catalog`` left half written.
    """
    if catalog.meta(REBUILDING_KEY):
        raise CatalogError(
            f"{catalog.path} was left half written by a rebuild-catalog that did not finish;"
            " nothing is pruned on its word (run rebuild-catalog again)"
        )
    if not dry_run:
        catalog.lock_for_run()
        try:  # nothing is deleted from under a restore, verify or repair
            catalog.read_lock.exclusive()
        except CatalogError:
            catalog.run_lock.release()
            raise
    report = PruneReport(dry_run=dry_run, max_unused=max_unused)
    try:
        tapes = catalog.tape_labels()
        disks = {k: v for k, v in catalog.device_urls().items() if k not in tapes}
        opened, missing = devices_for_labels(disks, list(overrides), write=not dry_run)
        report.unreachable = dict(missing)
        try:
            done = reclaim(
                catalog, list(opened.values()), on_event, max_unused=max_unused, dry_run=dry_run
            )
            if not dry_run and (done.compacted or done.deleted):
                # the copies name volumes that are gone now
                copy_catalog(catalog, list(opened.values()), on_event)
        finally:
            close_all(list(opened.values()))
        urls = {d.url: label for label, d in opened.items()}
        for url, why in done.failed.items():
            report.problems[urls.get(url, url)] = why
        report.removed = _by_set(done.deleted)
        report.compacted = _by_set(done.compacted)
        report.foreign = done.foreign
        report.reclaimed_bytes = done.bytes
        report.volumes = done.actions
        report.discarded = done.discarded
        root_ids = catalog.root_ids()
        live, busy = catalog.labels_in_use(root_ids, root_ids | catalog.pinned_ids())
        report.free_tapes = free_tapes(tapes, live, busy)
        if not dry_run:  # a tape is never deleted from: nothing is left to clean there
            report.forgotten = forget_dead(catalog, done.cleaned | set(tapes))
    finally:
        if not dry_run:
            catalog.read_lock.release()
            catalog.run_lock.release()
    return report
