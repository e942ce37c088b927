"""``parbackup backup``: back up sources onto several devices at once."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum

import click

from parbackup.cli.cluster import cluster_executor, cluster_options
from parbackup.cli.common import (
    NumberRange,
    accept_new_host_keys_option,
    catalog_option,
    devices_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
    local_catalog_file,
    open_catalog,
)
from parbackup.cli.keys import backup_codec, password_options, remember_key
from parbackup.cli.profiles import profile_options
from parbackup.cli.render import line, progress_view, table
from parbackup.devices.medium import check_catalog_place
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions, BackupReport
from parbackup.errors import RestoreError, UsageError
from parbackup.model import Order, Strategy
from parbackup.plan.pacing import Balance
from parbackup.readback.paths import target_path
from parbackup.selection import ScanRules

_NAME_MAX, _PATH_MAX = 255, 4096
"""Linux's limits on one part of a path and on a whole path (with its NUL)."""

device_option = devices_option(
    "A backup device; repeat for each. A plain path or file:///path is a directory."
)


def _choice_option(name: str, choices: type[Enum], default: Enum, help: str) -> Callable:
    """An option taking one of an enum's values, its default shown in --help."""
    return click.option(
        name,
        type=click.Choice([c.value for c in choices]),
        default=default.value,
        show_default=True,
        help=help,
    )


strategy_option = _choice_option(
    "--strategy",
    Strategy,
    Strategy.FILL,
    "fill: every device ends at exactly its share, at most devices-1 files split. "
    "threshold: files larger than T = total/devices are cut into segments of at most T.",
)
balance_option = _choice_option(
    "--balance",
    Balance,
    Balance.BYTES,
    "bytes: every device gets an equal share (capped by its free space). time: shares "
    "proportional to each device's speed (?speed=RATE on its URL, else what earlier "
    "backups measured, else a short probe write), so all finish together; a device that "
    "falls behind at run time hands its not-started work to those ahead.",
)
order_option = _choice_option(
    "--order",
    Order,
    Order.DESC,
    "Sort files and segments by size, largest first (desc) or smallest first (asc).",
)

_SELECTION_OPTIONS = (
    click.option(
        "--exclude",
        "excludes",
        multiple=True,
        metavar="PATTERN",
        help="Leave out paths matching PATTERN (gitignore-style; repeat for more), matched "
        "against the absolute path. A pattern with no '/' but a trailing one (*.log, "
        "node_modules/) matches a name at any depth; one with another '/' is anchored at "
        "'/', not at the source root (/srv/data/tmp, srv/*/cache): start it with '**/' "
        "to match at any depth. '**' spans directories; a trailing '/' matches "
        "directories only. An excluded directory is not entered. The same rules as "
        "restore --exclude.",
    ),
    click.option(
        "--exclude-file",
        "exclude_files",
        multiple=True,
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Read --exclude patterns from FILE, one a line ('#' comments and blank "
        "lines are ignored).",
    ),
    click.option(
        "--exclude-if-present",
        "if_present",
        multiple=True,
        metavar="NAME",
        help="Leave out every directory that holds an entry NAME (NAME too), e.g. .nobackup.",
    ),
    click.option(
        "--exclude-caches",
        is_flag=True,
        help="Leave out every directory holding a CACHEDIR.TAG file with the standard "
        "signature (https://bford.info/cachedir/), the tag too.",
    ),
    click.option(
        "--one-file-system",
        is_flag=True,
        help="Do not cross into other filesystems: a mount point inside a source is "
        "recorded as an empty directory and not entered. Backup devices and the catalog "
        "inside a source are always left out.",
    ),
)


def selection_options(func):
    """The options that choose what a scan of local trees leaves out (backup and plan)."""
    for option in reversed(_SELECTION_OPTIONS):
        func = option(func)
    return func


def read_exclude_file(path: str) -> list[str]:
    """The patterns of an --exclude-file: one a line, blank lines and '#' comments out."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read exclude file {path}: {exc.strerror or exc}") from exc
    return [ln.rstrip() for ln in lines if ln.strip() and not ln.startswith("#")]


def scan_rules(
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    if_present: tuple[str, ...],
    exclude_caches: bool,
    one_file_system: bool,
) -> ScanRules:
    """The selection the options ask for."""
    patterns = list(excludes)
    for path in exclude_files:
        patterns += read_exclude_file(path)
    for name in if_present:
        if not name or "/" in name or name in (".", ".."):
            raise UsageError(f"--exclude-if-present takes a plain name, not {name!r}")
    if any(not p.strip() for p in patterns):
        raise UsageError("--exclude takes a non-empty pattern")
    return ScanRules(
        patterns=tuple(patterns),
        if_present=tuple(if_present),
        caches=exclude_caches,
        one_file_system=one_file_system,
    )


def excluded_lines(counts: dict[str, int]) -> None:
    """Print how many entries each selection rule left out."""
    if counts:
        line(f"excluded: {sum(counts.values())} entries")
    for rule, n in counts.items():
        line(f"  {n:>8}  {rule}")


def _set_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    """``--time``: an ISO 8601 time (local time when it names no zone) -> UTC, seconds."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-03-01T02:00:00+01:00)"
        ) from None
    try:
        utc = when.astimezone(UTC)
    except (OverflowError, ValueError):  # past year 9999, or before year 1, in UTC
        utc = None
    if utc is None or not 1900 <= utc.year <= 9998:  # every zone's local time is a date
        raise click.BadParameter(f"{value!r} is out of range (years 1900 to 9998)")
    return utc.isoformat(timespec="seconds")


def summarize(report: BackupReport) -> None:
    """The human summary of a backup: per-device table, totals, skipped files."""
    rows = []
    for d in report.devices:
        rate = d.bytes / d.seconds / 1e6 if d.seconds > 0 else 0.0
        rows.append(
            [
                d.url,
                d.status,
                human_bytes(d.bytes),
                str(d.segments),
                f"{d.seconds:.2f}",
                f"{rate:.1f}",
                "-" if d.predicted is None else f"{d.predicted:.2f}",
                "-" if d.finished is None else f"{d.finished:.2f}",
            ]
        )
    table(
        f"backup set {report.set_id}",
        ["device", "status", "bytes", "segments", "busy s", "MB/s", "predicted s", "finished s"],
        rows,
    )
    for d in report.devices:
        if d.status != "ok":
            when = f" at {d.failed_at:.1f}s ({d.failed_utc})" if d.failed_at else " at start"
            line(f"device failed{when}: {d.url}: {d.error}", problem=True)
        for url, n in d.redirected.items():
            line(f"  redirected {human_bytes(n)} from {d.url} to {url}")
        for url, n in d.moved.items():
            line(f"  moved {human_bytes(n)} from {d.url} (behind its pace) to {url}")
    if any(d.status != "ok" for d in report.devices) and report.status != "failed":
        b = report.balance()
        line(
            f"balance over the {b['devices']} surviving devices: "
            f"{human_bytes(b['min_bytes'])} to {human_bytes(b['max_bytes'])} "
            f"(spread {b['spread_bytes']} bytes)"
        )
    line(
        f"status: {report.status}  files: {report.files}  bytes: {human_bytes(report.bytes)}  "
        f"threshold T: {human_bytes(report.threshold)}  time: {report.seconds:.2f}s"
    )
    excluded_lines(report.excluded)
    if report.parity:  # what the set can lose, and how its parity was written
        p = report.parity
        how = f" (written {p['written']})" if p.get("written") else ""
        lose = f"any {p['redundancy']} device(s)" if p["redundancy"] else "no device"
        line(
            f"parity on {p['m']} device(s): the set survives losing {lose}{how}",
            problem=p["redundancy"] < p["m"],
        )
    if report.kind == "incremental":
        line(f"incremental: {human_bytes(report.reused)} reused from earlier sets")
    for s in report.skipped:
        line(f"skipped: {s.path}: {s.error}", problem=True)
    for s in report.inconsistent:
        line(f"INCONSISTENT (not stored as good): {s.path}: {s.error}", problem=True)
    for s in report.grown:
        line(f"GREW while read (kept as read, restorable): {s.path}: {s.error}", problem=True)
    if report.error:
        line(f"error: {report.error}", problem=True)


def _check_stdin_name(name: str) -> None:
    """Refuse a --stdin-name restore could not recreate in a directory ('..', '.', empty
    or NUL parts; a part over NAME_MAX bytes, or the whole over PATH_MAX): such a set was
    stored as complete, then every restore of it into a directory refused its one file
    (and past 64 KiB, verify called the record's header damaged)."""
    path = "/" + (name or "stdin").lstrip("/")  # engine/prepare.py's path
    size = os.fsencode(path)
    if len(size) >= _PATH_MAX or any(len(part) > _NAME_MAX for part in size.split(b"/")):
        raise UsageError(
            f"--stdin-name of {len(size) - 1} bytes: a name restore can make under a target"
            f" (parts of at most {_NAME_MAX} bytes, {_PATH_MAX - 2} in all)"
        )
    try:
        target_path("/", path)
    except RestoreError as exc:
        raise UsageError(
            f"--stdin-name {name!r}: a name restore can make under a target (no '..', '.',"
            " empty or NUL parts)"
        ) from exc


@click.command("backup")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@device_option
@catalog_option
@strategy_option
@order_option
@balance_option
@click.option(
    "--device-timeout",
    type=NumberRange(min=0.1, max=1e6),
    default=60.0,
    show_default=True,
    help="Give a device up when it makes no progress for this many seconds (counted "
    "once its mover process is up: a slow start does not fail a healthy device).",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Copy only files changed (size, mtime, ctime or inode) since the last restorable "
    "set of the same sources; the new set still restores the whole tree.",
)
@click.option(
    "--rehash",
    is_flag=True,
    help="With --incremental: compare file contents with the earlier set instead of metadata.",
)
@click.option(
    "--snapshot",
    type=click.Choice(["btrfs"]),
    default=None,
    help="Back up from a read-only snapshot of each source's btrfs subvolume, deleted "
    "afterwards (even when the backup fails). Paths are recorded as in the live tree.",
)
@click.option(
    "--pre-command",
    metavar="CMD",
    default="",
    help="Shell command run before the scan to make a snapshot (LVM, ZFS, ...); it prints "
    "the path to read each source from, one a line ($PARBACKUP_SOURCES lists them).",
)
@click.option(
    "--post-command",
    metavar="CMD",
    default="",
    help="Shell command run after the backup, always, to release the snapshot "
    "($PARBACKUP_SNAPSHOTS, $PARBACKUP_STATUS tell what was used and how it ended).",
)
@selection_options
@accept_new_host_keys_option
@click.option(
    "--stdin-name",
    metavar="NAME",
    default="stdin",
    show_default=True,
    help="With the source '-' (standard input): the file name the stream is stored and "
    "restored as (NAME restores to TARGET/NAME).",
)
@click.option(
    "--time",
    "set_time",
    metavar="TIMESTAMP",
    default=None,
    callback=_set_time,
    help="Record the set under this time (ISO 8601; local time if no zone is given) "
    "instead of now: for imports, and to try retention policies (forget) without waiting.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt the set (AES-256-GCM: data, names, metadata, catalog copies). The first "
    "--encrypt creates the catalog's key, wrapped by the passphrase given; once a catalog "
    "has a key, every set is encrypted with it.",
)
@click.option(
    "--compression",
    metavar="auto|off|LEVEL",
    default=None,
    help="zstd per record: auto (level 1, and a file whose data does not shrink is "
    "stored as it is), off, or a level 1-19. Default: auto for an encrypted set, else off.",
)
@click.option(
    "--no-xattrs",
    is_flag=True,
    help="Leave out extended attributes, POSIX ACLs, file capabilities and SELinux labels "
    "(not read, not stored; restore gives the files without them). Owner, mode and times "
    "are kept.",
)
@click.option(
    "--parity",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Write Reed-Solomon parity on the last M devices: the set survives losing any M "
    "devices (the data is spread over the others).",
)
@password_options
@profile_options
@cluster_options
@json_option
@handle_errors
def backup(
    sources: tuple[str, ...],
    devices: tuple[str, ...],
    catalog_path: str | None,
    strategy: str,
    order: str,
    balance: str,
    device_timeout: float,
    incremental: bool,
    rehash: bool,
    snapshot: str | None,
    pre_command: str,
    post_command: str,
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    if_present: tuple[str, ...],
    exclude_caches: bool,
    one_file_system: bool,
    stdin_name: str,
    set_time: str,
    encrypt: bool,
    compression: str | None,
    no_xattrs: bool,
    password_file: str | None,
    password_command: str | None,
    parity: int,
    cluster: str,
    cluster_listen: str,
    as_json: bool,
) -> int:
    """Back up SOURCES (directories or files) onto every --device at once.

    The bytes are split so every device gets an equal share (T = total / devices); all
    devices are written concurrently; a device that fails mid-backup has its remaining
    work redirected to the others. Exit status: 0 done, 3 done with warnings (skipped
    files, a failed device), 1 failed, 2 bad usage.

    \b
    Examples:
      parbackup backup /srv/data /home -d /mnt/disk1 -d /mnt/disk2 -d /mnt/disk3
      parbackup backup /srv/data --incremental -d /mnt/disk1 -d /mnt/disk2
      parbackup backup /home --exclude '*.tmp' --exclude-caches -d /mnt/d1 -d /mnt/d2
      parbackup backup /srv/vol --snapshot btrfs -d /mnt/disk1 -d /mnt/disk2
      parbackup backup /dev/md0 -d /mnt/disk1 -d /mnt/disk2         # one image
      pg_dump db | parbackup backup - --stdin-name db.sql -d /mnt/disk1 -d /mnt/disk2
      parbackup backup '/srv/data?host=node2' -d '/mnt/d1?host=node1' --cluster tcp://sched:8786
    """
    local = local_catalog_file(catalog_path)
    check_catalog_place(devices, local, device_timeout)  # before opening makes the file
    codec, key_file = backup_codec(
        catalog_path, encrypt, compression, password_file, password_command
    )
    options = BackupOptions(
        strategy=Strategy(strategy),
        order=Order(order),
        device_timeout=device_timeout,
        incremental=incremental or rehash,
        rehash=rehash,
        snapshot=snapshot or "",
        pre_command=pre_command,
        post_command=post_command,
        balance=Balance(balance),
        select=scan_rules(excludes, exclude_files, if_present, exclude_caches, one_file_system),
        created=set_time,
        codec=codec,
        key_file=key_file,
        parity=parity,
        xattrs=not no_xattrs,
    )
    if "-" in sources and len(sources) > 1:
        raise UsageError("'-' (standard input) must be the only source of its backup")
    if "-" in sources and (incremental or rehash or snapshot or pre_command or post_command):
        raise UsageError("a backup of standard input takes no --incremental or snapshot options")
    if "-" in sources:
        _check_stdin_name(stdin_name)
    stdin = None
    if sources == ("-",):
        try:
            stdin = click.get_binary_stream("stdin")
        except RuntimeError as exc:  # standard input is closed (started with 0<&-)
            raise UsageError("'-': standard input is closed, there is nothing to back up") from exc
    with (
        cluster_executor(cluster, cluster_listen) as executor,
        open_catalog(catalog_path, create=True) as catalog,
        progress_view(not as_json) as view,
    ):
        remember_key(catalog, codec)
        report = run_backup(
            sources,
            devices,
            catalog,
            options,
            view,
            stdin=stdin,
            stdin_name=stdin_name,
            executor=executor,
        )
    if as_json:
        emit_json(report.to_json())
    else:
        summarize(report)
    return report.exit_code
