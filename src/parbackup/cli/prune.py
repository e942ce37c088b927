"""``parbackup prune --orphans``: remove what runs that died or failed left on the devices."""

from __future__ import annotations

import click

from parbackup.cli.common import catalog_option, emit_json, handle_errors, json_option, open_catalog
from parbackup.cli.render import line
from parbackup.cli.restore import moved_device_option
from parbackup.engine.recovery import prune_orphans
from parbackup.errors import UsageError


@click.command("prune")
@click.option(
    "--orphans",
    is_flag=True,
    help="Delete from every device the catalog knows what no restorable set needs: "
    "volumes of interrupted (killed), failed and forgotten sets, and the unused part of "
    "volumes a later set still partly reads; then drop those sets from the catalog.",
)
@moved_device_option
@catalog_option
@json_option
@handle_errors
def prune(orphans: bool, devices: tuple[str, ...], catalog_path: str | None, as_json: bool) -> int:
    """Remove orphaned volumes: what a killed or failed backup, or ``forget``, left.

    Complete and degraded sets are never touched, nor are sets this catalog does not
    know (they are listed as foreign). Exit status 3 when a device could not be reached.
    """
    if not orphans:
        raise UsageError("say what to prune: --orphans")
    with open_catalog(catalog_path, create=False) as catalog:
        report = prune_orphans(catalog, devices)
    if as_json:
        emit_json(report.to_json(), 3 if report.unreachable else 0)
    else:
        for set_id, urls in report.removed.items():
            line(f"removed volumes of set {set_id} from {', '.join(urls)}")
        for set_id, urls in report.compacted.items():
            line(f"dropped the unused part of set {set_id}'s volumes on {', '.join(urls)}")
        for set_id in report.forgotten:
            line(f"forgot set {set_id}")
        for set_id, urls in report.foreign.items():
            line(f"left alone: set {set_id} on {', '.join(urls)} is not in this catalog")
        for label, reason in report.unreachable.items():
            line(f"unreachable: device {label}: {reason}", problem=True)
        if not (report.removed or report.compacted or report.forgotten):
            line("nothing to prune")
    return 3 if report.unreachable else 0
