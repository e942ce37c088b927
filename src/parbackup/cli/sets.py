"""``parbackup sets``: list the backup sets in the catalog."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    catalog_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
    open_catalog,
)
from parbackup.cli.profiles import profile_options
from parbackup.cli.render import table


@click.command("sets")
@catalog_option
@profile_options
@json_option
@handle_errors
def sets(catalog_path: str | None, as_json: bool) -> int:
    """List backup sets, oldest first: status, full or incremental, bytes copied and reused."""
    with open_catalog(catalog_path, create=False) as catalog:
        infos = catalog.sets()
    if as_json:
        emit_json(
            {
                "sets": [
                    {
                        "set": s.id,
                        "status": s.status,
                        "created": s.created,
                        "finished": s.finished,
                        "files": s.files,
                        "bytes": s.bytes,
                        "kind": s.kind,
                        "reused": s.reused,
                        "sources": s.sources,
                    }
                    for s in infos
                ]
            }
        )
        return 0
    table(
        "backup sets",
        ["set", "created", "status", "kind", "files", "copied", "reused", "sources"],
        [
            [
                s.id,
                s.created,
                s.status,
                s.kind,
                str(s.files),
                human_bytes(s.bytes),
                human_bytes(s.reused),
                " ".join(s.sources),
            ]
            for s in infos
        ],
    )
    return 0
