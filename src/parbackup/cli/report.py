"""``parbackup report``: draw how a backup went as one self-contained HTML page."""

from __future__ import annotations

import errno
import os

import click

from parbackup.cli.common import catalog_option, emit_json, handle_errors, json_option, open_catalog
from parbackup.cli.ls import SET_HELP
from parbackup.cli.profiles import profile_options, scoped_set
from parbackup.cli.render import line
from parbackup.engine.reportpage import render_report
from parbackup.errors import ParbackupError, UsageError
from parbackup.fileio import NotDurableError, write_synced


def write_page(path: str, text: str) -> None:
    """Make ``text`` the page at ``path``, durably, or leave the page that was there
    (fileio.write_synced: a temporary file fsynced, renamed over it, the folder fsynced).
    A page is small and made whole in memory first, so nothing is streamed."""
    try:
        write_synced(path, text.encode())  # 0600, as before
    except NotDurableError as exc:
        raise ParbackupError(
            f"the report {path} is written, but its folder could not be synced "
            f"({exc.strerror or exc}): it may not survive a power cut"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM):
            folder = os.path.dirname(os.path.abspath(path))
            raise UsageError(f"cannot write the report into {folder}: {exc.strerror}") from exc
        # a full disk named no file: say which
        raise ParbackupError(f"cannot write the report {path}: {exc.strerror or exc}") from exc


@click.command("report", epilog=SET_HELP)
@click.argument("set_ref", metavar="SET", default="latest")
@click.option(
    "--html",
    "html_path",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write the page here (one file: no scripts, no network needed to view it).",
)
@catalog_option
@profile_options
@json_option
@handle_errors
def report(set_ref: str, html_path: str, catalog_path: str | None, as_json: bool) -> int:
    """Draw how the backup SET went: each device's bytes over time, when a device
    failed and where its work went, and the balance at the end.

    Reads the catalog only (the backup keeps a bounded number of progress samples per
    device there). Example: parbackup report latest --html /tmp/backup.html
    """
    set_ref = scoped_set(catalog_path, set_ref)
    with open_catalog(catalog_path, create=False) as catalog:
        page = render_report(catalog, set_ref)
    write_page(html_path, page.html)
    if as_json:
        emit_json(
            {
                "status": "ok",
                "set": page.set.id,
                "html": os.path.abspath(html_path),
                "devices": page.devices,
                "samples": page.samples,
            }
        )
    else:
        line(
            f"wrote {html_path}: set {page.set.id}, {page.devices} devices, {page.samples} samples"
        )
    return 0
