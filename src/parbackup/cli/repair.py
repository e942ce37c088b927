"""``parbackup repair``: rebuild a lost device of a parity set onto a new device (K2)."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    accept_new_host_keys_option,
    catalog_option,
    emit_json,
    handle_errors,
    json_option,
    open_catalog_to_read,
)
from parbackup.cli.render import line
from parbackup.readback.repair import run_repair


@click.command("repair")
@click.option("--set", "set_ref", metavar="ID", required=True, help="The set to repair.")
@click.option(
    "--device",
    "new_url",
    metavar="URL",
    required=True,
    help="The replacement device: it gets the lost device's label and volumes. A new "
    "device, or the one an earlier repair of the same lost device made (to repair "
    "another set onto it); files of its own it already holds are left alone.",
)
@click.option(
    "--lost",
    metavar="LABEL",
    default="",
    help="The device to rebuild (a label or its start), when several are missing or "
    "one is present but damaged.",
)
@click.option(
    "--from",
    "devices",
    multiple=True,
    metavar="URL",
    help="Where a surviving device is now, if it moved; matched by its label.",
)
@catalog_option
@accept_new_host_keys_option
@json_option
@handle_errors
def repair(
    set_ref: str,
    new_url: str,
    lost: str,
    devices: tuple[str, ...],
    catalog_path: str | None,
    as_json: bool,
) -> int:
    """Rebuild a missing device's volumes of a set written with --parity onto a new device.

    \b
    Example:
      parbackup verify                     # status: recoverable, names the missing device
      parbackup repair --set 3f2a --device /mnt/newdisk
    """
    with open_catalog_to_read(catalog_path) as catalog:
        report = run_repair(catalog, set_ref, new_url, lost=lost, devices=devices)
    if as_json:
        emit_json(report.to_json())
    elif report.status == "nothing":
        line(f"set {report.set_id}: no device is missing; nothing to repair")
    elif report.status == "ok":
        line(
            f"set {report.set_id}: device {report.label} rebuilt onto {report.device} "
            f"in {report.seconds:.2f}s"
        )
    else:
        line(f"repair failed: {report.error}", problem=True)
    return report.exit_code
