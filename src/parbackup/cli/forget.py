"""``parbackup forget``: retire the backup sets a retention policy does not keep."""

from __future__ import annotations

import click

from parbackup.cli.common import (
    catalog_option,
    emit_json,
    handle_errors,
    json_option,
    max_unused_option,
    open_catalog,
)
from parbackup.cli.profiles import profile_options
from parbackup.cli.render import line, progress_view
from parbackup.cli.restore import moved_device_option
from parbackup.engine.forget import ForgetReport, GroupBy, forget, group_sources
from parbackup.plan.retention import UNLIMITED, Policy, Within, parse_within


def _count(name: str, what: str) -> click.Option:
    if name == "last":
        text = "Keep the N newest sets of each group (-1: all)."
    else:
        text = f"Keep the newest set of each of the last N {what} that have one (-1: all)."
    return click.option(
        f"--keep-{name}",
        name,
        type=click.IntRange(min=UNLIMITED),
        default=0,
        metavar="N",
        help=text,
    )


def _within(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Within:
    return parse_within(value) if value else Within()


def _render(report: ForgetReport) -> None:
    """The human report: per group, every set kept (with why) and every set that goes."""
    group = None
    for d in report.decisions:
        if d.set.group != group:
            group = d.set.group
            sources = group_sources(group)
            line("all sets" if sources is None else f"sources: {' '.join(sources)}")
        when = d.set.time.isoformat(timespec="seconds")
        if d.keep:
            line(f"  keep    {d.set.id}  {when}  ({', '.join(d.reasons)})")
        else:
            line(f"  {'would forget' if report.dry_run else 'forget'}  {d.set.id}  {when}")
    if not report.decisions:
        line("no restorable sets")
    gone = sum(1 for d in report.decisions if not d.keep)
    if report.dry_run:
        line(f"dry run: {gone} set(s) would be forgotten; nothing was changed")
    elif report.prune is None:
        line(
            f"forgot {len(report.forgotten)} set(s); run 'parbackup prune' (or forget --prune)"
            " to reclaim their space"
        )
    else:
        p = report.prune
        line(
            f"forgot {len(report.forgotten)} set(s); prune reclaimed {p.reclaimed_bytes} bytes"
            f" (volumes of {len(p.removed)} set(s) removed, {len(p.compacted)} compacted)"
        )
        for label, reason in p.unreachable.items():
            line(f"unreachable: device {label}: {reason}", problem=True)
        for label, reason in p.problems.items():
            line(f"not fully cleaned: device {label}: {reason}", problem=True)


@click.command("forget")
@_count("last", "sets")
@_count("hourly", "hours")
@_count("daily", "days")
@_count("weekly", "ISO weeks")
@_count("monthly", "months")
@_count("yearly", "years")
@click.option(
    "--keep-within",
    "within",
    metavar="DURATION",
    default=None,
    callback=_within,
    help="Keep every set newer than DURATION before the group's newest set "
    "(years, months, days, hours: e.g. 7d, 36h, 1y6m, 1y5m7d2h).",
)
@click.option(
    "--group-by",
    type=click.Choice([g.value for g in GroupBy]),
    default=GroupBy.SOURCES.value,
    show_default=True,
    help="sources: apply the policy to each set of sources apart. none: to all sets at once.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="PATH",
    help="Apply the policy only to the sets of exactly these sources (repeat for each; "
    "a profile's sources go here).",
)
@click.option("--dry-run", "-n", is_flag=True, help="Show what would go and why; change nothing.")
@click.option(
    "--prune",
    "and_prune",
    is_flag=True,
    help="Then reclaim the space no live set needs on every reachable device (as 'prune').",
)
@max_unused_option(
    "With --prune: compact a partly needed volume only when more than PERCENT of it "
    "is unused (as 'prune --max-unused')."
)
@moved_device_option
@catalog_option
@profile_options
@json_option
@handle_errors
def forget_command(
    last: int,
    hourly: int,
    daily: int,
    weekly: int,
    monthly: int,
    yearly: int,
    within: Within,
    group_by: str,
    sources: tuple[str, ...],
    dry_run: bool,
    and_prune: bool,
    max_unused: float,
    devices: tuple[str, ...],
    catalog_path: str | None,
    as_json: bool,
) -> int:
    """Forget the backup sets a retention policy does not keep (restic's rules).

    Sets are grouped (--group-by); in each group, walking from the newest set back,
    --keep-last N keeps the N newest, and --keep-daily N (hourly, weekly, monthly,
    yearly) the newest set of each of the N newest days that have one (and the oldest
    set, while the rule has count left). A set is kept if any rule keeps it. A policy
    that keeps nothing is refused.

    Forgetting only changes the catalog (one transaction, under the run lock). The
    space goes at the next prune (--prune here, or 'parbackup prune'); records
    a kept incremental set reuses from a forgotten one stay until nothing needs them.
    Exit status 3 when the prune could not reach a device.

    \b
    Examples:
      parbackup forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
      parbackup forget --keep-last 3 --keep-within 30d --prune
    """
    policy = Policy(last, hourly, daily, weekly, monthly, yearly, within)
    policy.check()  # refused before the catalog is even opened
    with (
        open_catalog(catalog_path, create=False) as catalog,
        progress_view(not as_json) as view,
    ):
        report = forget(
            catalog,
            policy,
            group_by=GroupBy(group_by),
            dry_run=dry_run,
            prune=and_prune,
            overrides=devices,
            on_event=view,
            sources=sources,
            max_unused=max_unused,
        )
    if as_json:
        emit_json(report.to_json(), report.exit_code)
    else:
        _render(report)
    return report.exit_code
