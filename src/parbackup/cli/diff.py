"""``parbackup diff``: what changed between two sets, from the catalog alone."""

from __future__ import annotations

import click

from parbackup.cli.common import catalog_option, emit_json, handle_errors, json_option, open_catalog
from parbackup.cli.ls import SET_HELP
from parbackup.cli.profiles import profile_options, scoped_set
from parbackup.cli.render import line
from parbackup.engine.browse import diff_sets


@click.command("diff", epilog=SET_HELP)
@click.argument("set_a", metavar="SET_A")
@click.argument("set_b", metavar="SET_B")
@catalog_option
@profile_options
@json_option
@handle_errors
def diff(set_a: str, set_b: str, catalog_path: str | None, as_json: bool) -> int:
    """Show what changed from SET_A to SET_B, one path a line:

    \b
      +  added        -  removed
      M  changed (kind, size, bytes or link target; the fields follow)
      U  metadata only (mode, owner, modification time)

    Bytes are compared by the records' checksums, so a file rewritten with the same
    bytes shows as U, not M (where the two sets cut the file at other offsets, a new
    modification time counts as M). Example: parbackup diff latest~1 latest
    """
    set_a, set_b = scoped_set(catalog_path, set_a), scoped_set(catalog_path, set_b)
    with open_catalog(catalog_path, create=False) as catalog:
        result = diff_sets(catalog, set_a, set_b)
    if as_json:
        emit_json(result.to_json())
        return 0
    line(f"from {result.a.id} ({result.a.created}) to {result.b.id} ({result.b.created})")
    for e in result.added:
        line(f"+ {e.path}")
    for e in result.removed:
        line(f"- {e.path}")
    for c in result.changed:
        line(f"M {c.path} ({', '.join(c.what)})")
    for c in result.metadata:
        line(f"U {c.path} ({', '.join(c.what)})")
    line(
        f"added {len(result.added)}, removed {len(result.removed)}, changed "
        f"{len(result.changed)}, metadata only {len(result.metadata)}"
    )
    return 0
