"""``parbackup restore``: put a set (or some of its paths) back into a directory.

What only ``--stdout``, an image onto a block device or ``--exclude`` needs is imported
where it is asked for: a restore's imports come before its readers start
(tests/test_serial_start.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from parbackup.cli.cluster import cluster_options, reading
from parbackup.cli.common import (
    accept_new_host_keys_option,
    catalog_option,
    devices_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
    open_catalog_to_read,
)
from parbackup.cli.keys import password_options, reader_codec
from parbackup.cli.profiles import profile_options, scoped_set
from parbackup.cli.render import damaged_lines, line, warn
from parbackup.errors import UsageError
from parbackup.readback.restore import RestoreOptions, run_restore

set_option = click.option(
    "--set",
    "set_ref",
    default="latest",
    show_default=True,
    metavar="ID",
    help="Backup set: 'latest', 'latest~N' (the Nth before it), an id or unique prefix, "
    "or a date/time (the newest set made at or before it).",
)
moved_device_option = devices_option(
    "Where a device is now, if it moved; matched to the catalog by its label.", required=False
)


def reader_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options restore and verify both take, in this order after their own: moved
    devices, the catalog, SFTP host keys, the passphrase, profiles, --cluster, --json."""
    for option in (
        json_option,
        cluster_options,
        profile_options,
        password_options,
        accept_new_host_keys_option,
        catalog_option,
        moved_device_option,
    ):
        func = option(func)  # the last listed is the first shown, as in a decorator stack
    return func


@click.command("restore")
@click.option(
    "--target",
    "-t",
    default=None,
    type=click.Path(),
    help="Directory to restore into; source /srv/a comes back as TARGET/srv/a (a symlink "
    "to a directory is followed; one to a missing path is refused). A block device as "
    "TARGET receives the one image chosen with --include.",
)
@set_option
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATTERN",
    help="Restore only paths matching PATTERN, matched against the original absolute "
    "path or any parent of it, as a shell glob or a gitignore pattern ('**' spans "
    "directories: /srv/**/*.conf); repeatable.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="Leave out paths matching PATTERN (same rules as --include; an exclude wins); repeatable.",
)
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in TARGET.")
@click.option(
    "--stdout",
    "to_stdout",
    metavar="PATH",
    default=None,
    help="Write the one file PATH of the set to standard output instead (e.g. a stream "
    "backed up with --stdin-name); the summary goes to standard error.",
)
@reader_options
@handle_errors
def restore(
    target: str | None,
    set_ref: str,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    overwrite: bool,
    devices: tuple[str, ...],
    catalog_path: str | None,
    to_stdout: str | None,
    password_file: str | None,
    password_command: str | None,
    cluster: str,
    cluster_listen: str,
    as_json: bool,
) -> int:
    """Restore a backup set into TARGET, reading all devices at once.

    Every record is checked against its checksum; a damaged file is reported and not
    left in TARGET. Existing files are not replaced unless --overwrite.

    \b
    Example:
      parbackup restore --target /tmp/back --include '/srv/data/projects/*'
      parbackup restore --target /tmp/back --include '/srv/**/*.conf' --exclude '*.bak'
      parbackup restore --target /dev/sdc --include /dev/md0    # an image onto a disk
    """
    set_ref = scoped_set(catalog_path, set_ref)
    if to_stdout is not None:
        if cluster:
            raise UsageError("--stdout restores through local readers: it takes no --cluster")
        if target or includes or excludes or as_json:
            raise UsageError("--stdout takes no --target, --include, --exclude or --json")
        from parbackup.readback.stream import restore_to_stream

        codec = reader_codec(catalog_path, password_file, password_command)
        with open_catalog_to_read(catalog_path) as catalog:
            out = click.get_binary_stream("stdout")
            report = restore_to_stream(catalog, set_ref, to_stdout, out, devices, codec=codec)
        warn(f"restored {human_bytes(report.bytes)} of {to_stdout} from set {report.set_id}")
        damaged_lines(report.damaged, warn)
        return report.exit_code
    if not target:
        raise UsageError("give --target DIR (or --stdout PATH)")
    if excludes:
        from parbackup.selection import exclude

        includes += tuple(exclude(p) for p in excludes)
    options = RestoreOptions(
        target=target,
        set_ref=set_ref,
        includes=includes,
        overwrite=overwrite,
        devices=devices,
        codec=reader_codec(catalog_path, password_file, password_command),
    )
    run = run_restore
    if os.path.exists(target) and not os.path.isdir(target):  # a block device, or wrong
        from parbackup.sources.blockdev import is_block_device

        if not is_block_device(target):
            raise UsageError(f"--target {target} is neither a directory nor a block device")
        if cluster:
            raise UsageError("an image restore onto a block device takes no --cluster")
        from parbackup.readback.image import run_image_restore as run
    with reading(catalog_path, cluster, cluster_listen, not as_json) as (executor, catalog, v):
        report = run(catalog, replace(options, executor=executor), v)
    if as_json:
        emit_json(report.to_json())
    else:
        line(
            f"restored {report.files} entries, {human_bytes(report.bytes)} from set "
            f"{report.set_id} into {report.target} in {report.seconds:.2f}s"
        )
        damaged_lines(report.damaged)
        for d in report.skipped:
            line(f"skipped: {d['path']}: {d['error']}", problem=True)
        for d in report.grown:
            line(f"warning: {d['path']}: {d['note']}", problem=True)
        for d in getattr(report, "left_out", ()):
            left = ", ".join(d["left_out"])
            line(f"warning: {d['path']}: left out {left}: {d['error']}", problem=True)
        for label in report.rebuilt:  # the exit status 3 says why
            line(f"warning: device {label} is missing: read around it with parity", problem=True)
    return report.exit_code
