"""``parbackup files``: list the files of a backup set."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    catalog_option,
    emit_json,
    handle_errors,
    iso_utc,
    json_option,
    open_catalog,
)
from parbackup.cli.profiles import profile_options, scoped_set
from parbackup.cli.render import line
from parbackup.cli.restore import set_option
from parbackup.model import RESTORABLE_FILE_STATES
from parbackup.readback.select import restorable_set
from parbackup.xattrs import names


@click.command("files")
@set_option
@catalog_option
@profile_options
@json_option
@handle_errors
def files(set_ref: str, catalog_path: str | None, as_json: bool) -> int:
    """List the paths of a set: mode (octal), size, modification time (UTC), path.

    A name with control characters or bytes that are not UTF-8 is shown with backslash
    escapes; --json gives the exact name (undecodable bytes as \\udcXX escapes) and the
    names of its extended attributes (ACLs, capabilities, ...) as "xattrs".
    """
    set_ref = scoped_set(catalog_path, set_ref)
    with open_catalog(catalog_path, create=False) as catalog:
        info = restorable_set(catalog, set_ref)
        rows = [f for f in catalog.files(info.id) if f.state in RESTORABLE_FILE_STATES]
    if as_json:
        emit_json(
            {
                "set": info.id,
                "files": [
                    {
                        "path": f.entry.path,
                        "size": f.entry.size,
                        "mode": f.entry.mode,
                        "mtime": iso_utc(f.entry.mtime_ns),
                        "mtime_ns": f.entry.mtime_ns,
                        "kind": str(f.entry.kind),
                        **({"state": f.state} if f.state != "ok" else {}),
                        **({"xattrs": names(f.entry.meta)} if f.entry.meta else {}),
                    }
                    for f in rows
                ],
            }
        )
        return 0
    for f in rows:
        flag = "  (grew while backed up: kept as read)" if f.state == "grown" else ""
        line(
            f"{f.entry.mode:o} {f.entry.size:>12} {iso_utc(f.entry.mtime_ns)} {f.entry.path}{flag}"
        )
    return 0
