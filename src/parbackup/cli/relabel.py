"""``parbackup relabel``: write back the label a device lost, from its volume headers."""

from __future__ import annotations

import click

from parbackup.cli.common import emit_json, handle_errors, json_option
from parbackup.cli.render import line
from parbackup.engine.devices import restore_label


@click.command("relabel")
@click.argument("device", metavar="URL")
@json_option
@handle_errors
def relabel(device: str, as_json: bool) -> int:
    """Put back the label.json of a device that lost it, with the SAME label.

    Every volume on a device names the device it was written on, so the label is read
    back from the volume headers and the catalog knows the device again. A damaged
    label.json (empty, cut short, not a label) is replaced the same way. A device that
    has a readable label, or no readable volume, is left alone (exit 1).

    \b
    Example:
      parbackup relabel /mnt/disk1
    """
    label = restore_label(device)
    if as_json:
        emit_json({"status": "ok", "device": device, "label": label.label})
    else:
        line(f"{device}: label {label.label} written back")
    return 0
