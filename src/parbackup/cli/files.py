"""``parbackup files``: list the files of a backup set."""

from __future__ import annotations

import click

from parbackup.cli.common import catalog_option, emit_json, handle_errors, json_option, open_catalog
from parbackup.cli.render import line
from parbackup.cli.restore import set_option


@click.command("files")
@set_option
@catalog_option
@json_option
@handle_errors
def files(set_ref: str, catalog_path: str | None, as_json: bool) -> int:
    """List the paths of a set with size, mode and modification time."""
    with open_catalog(catalog_path, create=False) as catalog:
        info = catalog.resolve_set(set_ref)
        rows = [f for f in catalog.files(info.id) if f.state == "ok"]
    if as_json:
        emit_json(
            [
                {
                    "path": f.entry.path,
                    "size": f.entry.size,
                    "mode": f.entry.mode,
                    "mtime": f.entry.mtime_ns / 1e9,
                    "kind": str(f.entry.kind),
                }
                for f in rows
            ]
        )
        return 0
    for f in rows:
        line(f"{f.entry.mode:o} {f.entry.size:>12} {f.entry.path}")
    return 0
