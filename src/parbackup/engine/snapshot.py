"""Running a backup from a point-in-time snapshot of its sources (REQUIREMENTS F4).

The snapshot is taken before the scan and released after the set is recorded, whether
the backup succeeded, failed or raised; see ``sources.snapshot`` for the two kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace

from parbackup.catalog import Catalog
from parbackup.errors import UsageError
from parbackup.progress import EventSink, Notice
from parbackup.sources.registry import spec_for
from parbackup.sources.snapshot import Snapshot, btrfs_snapshots, command_snapshots

SNAPSHOT_KINDS = ("btrfs",)


def backup_from_snapshot(
    run: Callable,
    sources: Sequence[str],
    device_urls: Sequence[str],
    catalog: Catalog,
    options,
    on_event: EventSink,
):
    """``run`` (run_backup) over a snapshot of ``sources``, released afterwards."""
    live = [spec_for(s).name if s != "-" else s for s in sources]

    def notify(message: str) -> None:
        on_event(Notice(message))

    manager: AbstractContextManager[Snapshot]
    if options.snapshot:
        if options.snapshot not in SNAPSHOT_KINDS:
            raise UsageError(f"unknown snapshot kind {options.snapshot!r} (known: btrfs)")
        if options.pre_command or options.post_command:
            raise UsageError("--snapshot btrfs takes no --pre-command/--post-command")
        manager = btrfs_snapshots(live, notify)
    else:
        manager = command_snapshots(live, options.pre_command, options.post_command, notify)
    with manager as snap:
        inner = replace(
            options,
            snapshot="",
            pre_command="",
            post_command="",
            read_roots=tuple(snap.roots.items()),
        )
        report = run(live, device_urls, catalog, inner, on_event)
        snap.status = report.status
    return report
