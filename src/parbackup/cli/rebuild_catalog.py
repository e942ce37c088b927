"""``parbackup rebuild-catalog``: recreate a catalog from the devices alone (X2)."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    CatalogName,
    devices_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
)
from parbackup.cli.keys import passphrase, password_options
from parbackup.cli.render import line, progress_view, table
from parbackup.engine.rebuild import rebuild_catalog


@click.command("rebuild-catalog")
@devices_option("A device to read; repeat for each. Devices that are missing can be left out.")
@click.option(
    "--catalog",
    "catalog_path",
    required=True,
    type=CatalogName(),
    help="The new catalog file to write (must not exist yet), or an empty catalog on "
    "PostgreSQL (postgresql://USER@HOST/DB).",
)
@password_options
@json_option
@handle_errors
def rebuild(
    devices: tuple[str, ...],
    catalog_path: str,
    password_file: str | None,
    password_command: str | None,
    as_json: bool,
) -> int:
    """Read every volume on the devices and write the sets found into a new catalog.

    Every record is checked while it is read. With only some devices present, files
    whose bytes are not all found are recorded as incomplete (not restored) and listed.
    Exit status: 0 every set complete, 3 something is missing or damaged.

    \b
    Example:
      parbackup rebuild-catalog -d /mnt/disk1 -d /mnt/disk2 --catalog /tmp/new.sqlite
      parbackup restore --catalog /tmp/new.sqlite --target /tmp/back
    """
    with progress_view(False) as view:  # notices (one per set written) go to stderr
        report = rebuild_catalog(
            list(devices),
            catalog_path,
            view,
            passphrase=lambda: passphrase(password_file, password_command),
        )
    if as_json:
        emit_json(report.to_json(), report.exit_code)
        return report.exit_code
    table(
        f"sets found on {len(report.devices)} device(s), written to {report.catalog}",
        ["set", "created", "status", "files", "bytes", "incomplete"],
        [
            [
                s["set"],
                s.get("created", ""),
                s["status"],
                str(s.get("files", 0)),
                human_bytes(s.get("bytes", 0)),
                str(len(s.get("incomplete", []))),
            ]
            for s in report.sets
        ],
    )
    for s in report.sets:
        for f in s.get("incomplete", []):
            line(f"INCOMPLETE: {f['path']}: {f['error']}", problem=True)
        if s.get("unknown_file_ids"):
            line(f"set {s['set']}: {s['unknown_file_ids']} file(s) lie only on missing devices")
        for d in s.get("damaged", []):
            line(f"DAMAGED: {d.get('volume', '')}: {d['error']}", problem=True)
        if s.get("note"):
            line(f"note: set {s['set']}: {s['note']}")
    for d in report.devices:
        if "error" in d:
            line(f"not read: {d['url']}: {d['error']}", problem=True)
    return report.exit_code
