"""``parbackup verify``: read every record of a set back and check it (X3)."""

from __future__ import annotations

import click

from parbackup.cli.cluster import reading
from parbackup.cli.common import (
    emit_json,
    handle_errors,
    human_bytes,
)
from parbackup.cli.keys import reader_codec
from parbackup.cli.profiles import scoped_set
from parbackup.cli.render import damaged_lines, line
from parbackup.cli.restore import reader_options, set_option
from parbackup.readback.verify import run_verify


@click.command("verify")
@set_option
@reader_options
@handle_errors
def verify(
    set_ref: str,
    devices: tuple[str, ...],
    catalog_path: str | None,
    password_file: str | None,
    password_command: str | None,
    cluster: str,
    cluster_listen: str,
    as_json: bool,
) -> int:
    """Check that every segment of a set is present and intact; name each damaged file.

    \b
    Exit 0: the set is whole (status ok).
    Exit 3: every file whole, read back byte for byte, but a volume's tail is cut
            where no file's bytes lie (volume-damaged: its end record, records of
            directories, links or empty files, which restore takes from the
            catalog), or a device is missing and parity read around it
            (recoverable).
    Exit 1: damaged: a file's bytes lost (each such file is named), or bytes
            changed in a volume.
    """
    codec = reader_codec(catalog_path, password_file, password_command)
    set_ref = scoped_set(catalog_path, set_ref)
    with reading(catalog_path, cluster, cluster_listen, not as_json) as (executor, catalog, v):
        report = run_verify(catalog, set_ref, devices, v, codec=codec, executor=executor)
    if as_json:
        emit_json(report.to_json())
    else:
        line(
            f"set {report.set_id}: {report.status}; {report.files} files, "
            f"{human_bytes(report.bytes)} checked in {report.seconds:.2f}s"
        )
        damaged_lines(report.damaged)
        for d in report.missing:
            line(f"MISSING: device {d['url'] or d['label']}: {d['error']}", problem=True)
        if report.parity:
            p = report.parity
            line(
                f"parity: {p['k']} data + {p['m']} parity devices; "
                f"{max(0, p['redundancy'])} more device(s) may be lost"
                + (f" ({p['error']})" if p.get("error") else ""),
                problem=p["redundancy"] < p["m"],
            )
        if report.status in ("volume-damaged", "recoverable"):
            line("every file whole: restore gives each one back byte for byte", problem=True)
    return report.exit_code
