"""``parbackup ls``: list what a set holds, at or below a path, from the catalog alone."""

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
from parbackup.engine.browse import list_set
from parbackup.model import FileEntry

SET_HELP = (
    "SET is 'latest', 'latest~N' (the Nth before it), a set id or unique prefix, or a "
    "date/time (ISO 8601, local time unless a zone is given: the newest set made at or "
    "before it; a date alone means the end of that day)."
)


def entry_json(e: FileEntry) -> dict:
    """An entry in the JSON shape ``files`` uses."""
    return {
        "path": e.path,
        "kind": str(e.kind),
        "size": e.size,
        "mode": e.mode,
        "mtime": iso_utc(e.mtime_ns),
        "mtime_ns": e.mtime_ns,
        **({"link": e.link} if e.link else {}),
    }


def entry_line(e: FileEntry) -> str:
    """``mode size mtime path [-> link]`` on one line (odd names escaped by render)."""
    link = f" -> {e.link}" if e.link and str(e.kind) == "symlink" else ""
    return f"{e.mode:o} {e.size:>12} {iso_utc(e.mtime_ns)} {e.path}{link}"


@click.command("ls", epilog=SET_HELP)
@click.argument("set_ref", metavar="SET")
@click.argument("path", required=False, default="")
@catalog_option
@profile_options
@json_option
@handle_errors
def ls(set_ref: str, path: str, catalog_path: str | None, as_json: bool) -> int:
    """List the entries of SET at or below PATH (every entry without PATH).

    Reads the catalog only: no device is needed. PATH is an absolute path as recorded
    (a source /srv/data is listed as /srv/data/...).
    """
    set_ref = scoped_set(catalog_path, set_ref)
    with open_catalog(catalog_path, create=False) as catalog:
        info, entries = list_set(catalog, set_ref, path)
    if as_json:
        emit_json(
            {
                "status": "ok",
                "set": info.id,
                "path": path or None,
                "entries": [entry_json(e) for e in entries],
            }
        )
        return 0
    for e in entries:
        line(entry_line(e))
    return 0
