"""What a backup takes from earlier sets instead of reading it again: the incremental
parent's unchanged files, or an interrupted run's durable records (resume), never bytes
a device no longer holds."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from parbackup.catalog import Catalog
from parbackup.engine.incremental import drop_lacking, incremental_reuse, same_xattrs
from parbackup.engine.recovery import resume_reuse
from parbackup.engine.report import BackupOptions
from parbackup.entries import Entries
from parbackup.model import Skipped
from parbackup.plan.reuse import Opener, Reuse
from parbackup.progress import EventSink, Notice


@dataclass
class Found:
    """What ``earlier_reuse`` found: the reuse, the run it resumes ("" if none), and the
    earlier volumes its devices no longer hold (their files are copied again)."""

    reuse: Reuse
    resumed_from: str = ""
    lacking: list[Skipped] = field(default_factory=list)


def earlier_reuse(
    catalog: Catalog,
    names: list[str],
    entries: Entries,
    usable: Set[str],
    urls: Mapping[str, str],
    options: BackupOptions,
    rehash: Opener | None,
    on_event: EventSink,
    exact: Set[int] = frozenset(),
) -> Found:
    """The incremental parent's reuse (``--incremental``), else an interrupted run's
    (resume), on the devices labelled ``usable``; none when the earlier set was taken
    with another ``--xattrs`` choice. ``exact``: as for ``incremental_reuse``."""
    reuse = Reuse()
    resumed_from = ""
    sealed = options.codec is not None and options.codec.encrypted
    if options.incremental:
        found = incremental_reuse(
            catalog, names, entries, rehash=rehash, usable=usable, sealed=sealed, exact=exact
        )
        if found is None:
            on_event(Notice("no earlier set of these sources: making a full backup"))
        reuse = found or reuse
    # with --parity, never resume: an interrupted run's volumes have no parity (its
    # set never got a stripe), so records reused from them would be lost with their
    # device, in a set that claims to survive that loss
    if (
        not reuse.parent
        and not options.parity
        and (resumed := resume_reuse(catalog, names, entries, usable, sealed))
    ):
        reuse = resumed
        resumed_from = resumed.resumed
        on_event(Notice(f"resuming: {resumed.bytes} bytes an interrupted run wrote are reused"))
    keep = same_xattrs(catalog, reuse, options.xattrs)
    if keep is None:
        source = reuse.parent or resumed_from
        on_event(Notice(f"{source} was taken with --no-xattrs: every file is read again"))
        return Found(Reuse())
    lacking = drop_lacking(keep, urls, on_event) if keep.records else []
    return Found(keep, resumed_from, lacking)
