"""``parbackup find``: which sets hold paths matching a pattern, from the catalog alone."""

from __future__ import annotations

import click

from parbackup.cli.common import catalog_option, emit_json, handle_errors, json_option, open_catalog
from parbackup.cli.ls import entry_json, entry_line
from parbackup.cli.profiles import profile_options, profile_sources
from parbackup.cli.render import line
from parbackup.engine.browse import find_paths
from parbackup.errors import UsageError


@click.command("find")
@click.argument("patterns", metavar="PATTERN...", nargs=-1, required=True)
@catalog_option
@profile_options
@json_option
@handle_errors
def find(patterns: tuple[str, ...], catalog_path: str | None, as_json: bool) -> int:
    """Find the paths PATTERN selects in every restorable set, oldest set first;
    with --profile, in the sets of the profile's sources only (as ls and restore read
    'latest'): another profile's sets in the same catalog are not searched.

    PATTERN follows restore --include's rule: a shell glob or a gitignore pattern
    matched against the absolute path or a parent of it ('**' spans directories,
    '*.conf' matches at any depth, '/srv/**/x' is anchored); '!PATTERN' excludes.
    Output: set id, set time, then the entry as 'ls' shows it.
    """
    if any(not p.strip() or p == "!" for p in patterns):
        raise UsageError("find takes non-empty patterns")
    with open_catalog(catalog_path, create=False) as catalog:
        found = list(find_paths(catalog, patterns, profile_sources()))
    if as_json:
        emit_json(
            {
                "status": "ok",
                "patterns": list(patterns),
                "found": [
                    {"set": f.set.id, "created": f.set.created, **entry_json(f.entry)}
                    for f in found
                ],
            }
        )
        return 0
    for f in found:
        line(f"{f.set.id} {f.set.created} {entry_line(f.entry)}")
    return 0
