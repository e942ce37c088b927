"""``parbackup prune``: reclaim the space on the devices that no live backup set needs."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    catalog_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
    max_unused_option,
    open_catalog,
)
from parbackup.cli.render import line, progress_view
from parbackup.cli.restore import moved_device_option
from parbackup.engine.recovery import PruneReport, prune_orphans


def _render(report: PruneReport) -> None:
    """The human report: every volume that went (or would go), tapes now free, problems."""
    would = "would " if report.dry_run else ""
    for a in report.volumes:
        what = "delete" if a.action == "delete" else "compact"
        verb = what if report.dry_run else ("deleted" if what == "delete" else "compacted")
        line(f"{would}{verb} {a.volume} on {a.url} ({human_bytes(a.bytes)} freed)")
    for set_id in report.forgotten:
        line(f"forgot set {set_id} (nothing of it is left on any device)")
    for set_id, urls in report.foreign.items():
        line(f"left alone: set {set_id} on {', '.join(urls)} is not in this catalog")
    for url, labels in report.free_tapes.items():
        line(f"tape {url} (label {', '.join(labels)}) is free: nothing on it is live")
    for label, reason in report.unreachable.items():
        line(f"unreachable: device {label}: {reason}", problem=True)
    for label, reason in report.problems.items():
        line(f"not fully cleaned: device {label}: {reason}", problem=True)
    if report.volumes:
        line(
            f"{'dry run: ' if report.dry_run else ''}{len(report.volumes)} volume(s), "
            f"{human_bytes(report.reclaimed_bytes)} {would or ''}reclaimed"
            + ("; nothing was changed" if report.dry_run else "")
        )
    elif report.problems or report.unreachable:
        line("nothing was reclaimed")  # there was something, it could not be done
    else:
        line("nothing to prune")


@click.command("prune")
@max_unused_option(
    "Compact a volume that live sets need only in part when more than PERCENT of "
    "its bytes are unused (and more than 64 KiB): its needed records are copied into a "
    "new volume, checked, the catalog switches to it, then the old one goes. 0 compacts "
    "every such volume; 100 never compacts (whole dead volumes still go). Higher values "
    "copy less and leave more unused space, as restic's --max-unused."
)
@click.option(
    "--dry-run",
    "-n",
    is_flag=True,
    help="Show what would be deleted and compacted and the bytes it would free; "
    "change nothing (devices are opened read-only, no lock is taken).",
)
@click.option(
    "--orphans",
    is_flag=True,
    hidden=True,
    help="Accepted for older scripts: prune always removes what runs that died or failed left.",
)
@moved_device_option
@catalog_option
@json_option
@handle_errors
def prune(
    max_unused: float,
    dry_run: bool,
    orphans: bool,
    devices: tuple[str, ...],
    catalog_path: str | None,
    as_json: bool,
) -> int:
    """Reclaim the space on every device that no live backup set needs.

    A set is live while it is restorable (complete or degraded; not forgotten); a live
    incremental set also keeps alive the records it reuses from older, forgotten sets.
    Prune deletes every volume nothing live lies in (those of forgotten, interrupted
    and failed sets), compacts volumes that are only partly needed (--max-unused), and
    drops dead sets from the catalog once no device holds anything of them. The order
    is always: write the new volume, switch the catalog (one transaction), then delete
    the old; a kill at any moment loses nothing a live set needs. The catalog copies on
    the devices are refreshed afterwards.

    A tape is never compacted or deleted from: once nothing on it is live it is
    reported free (its next backup rewrites it whole). Sets this catalog does not know
    are never touched (they are listed as foreign). A device that cannot be reached is
    named and the exit status is 3 (so is a device where a volume could not be
    deleted, or a compaction stopped at a damaged record: the old volume then stays);
    run prune again once it is back to reclaim its share.

    \b
    Examples:
      parbackup forget --keep-daily 7 --keep-weekly 4 && parbackup prune --max-unused 10
      parbackup prune --dry-run          # what would go, and how many bytes
    """
    del orphans  # prune always removes what dead runs left
    with (
        open_catalog(catalog_path, create=False) as catalog,
        progress_view(not as_json) as view,
    ):
        report = prune_orphans(catalog, devices, view, max_unused=max_unused, dry_run=dry_run)
    code = report.exit_code
    if as_json:
        doc = report.to_json()
        if dry_run and not code:
            doc = {"status": "dry-run", **doc}
        emit_json(doc, code)
    else:
        _render(report)
    return code
