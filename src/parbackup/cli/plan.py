"""``parbackup plan``: a dry run that shows how a backup would be spread (P6)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from parbackup.cli.backup import (
    balance_option,
    device_option,
    excluded_lines,
    order_option,
    scan_rules,
    selection_options,
    strategy_option,
)
from parbackup.cli.common import (
    accept_new_host_keys_option,
    catalog_option,
    emit_json,
    handle_errors,
    human_bytes,
    json_option,
    local_catalog_file,
    open_catalog,
)
from parbackup.cli.profiles import profile_options
from parbackup.cli.render import line, table
from parbackup.devices.medium import check_catalog_place, check_distinct
from parbackup.engine.devices import close_all, open_devices
from parbackup.engine.incremental import incremental_reuse
from parbackup.engine.movers import scan_helpers
from parbackup.engine.parity import split_devices
from parbackup.engine.prepare import make_plan, scan, source_specs
from parbackup.engine.report import BackupOptions
from parbackup.engine.selecting import (
    automatic_excludes,
    inside_remote,
    selecting,
    with_automatic,
)
from parbackup.engine.speeds import dry_run_speeds
from parbackup.errors import CatalogError, PlanError
from parbackup.model import Order, Skipped, Space, Strategy
from parbackup.plan.pacing import Balance
from parbackup.selection import Excluded
from parbackup.sources.registry import exact_sources

EXCLUDED_SHOWN = 1000
"""At most this many excluded paths are listed by ``plan --json`` (all are counted)."""


@dataclass(frozen=True)
class _Dev:
    """What the speed lookup needs of a device opened for a dry run."""

    url: str
    label: str
    space: Space


@click.command("plan")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@device_option
@strategy_option
@order_option
@balance_option
@click.option("--items", "show_items", is_flag=True, help="List every item of the plan.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Plan only the files changed since the last set of the same sources (F3).",
)
@click.option(
    "--parity",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="As backup --parity M: plan the data over all devices but the last M.",
)
@catalog_option
@selection_options
@accept_new_host_keys_option
@profile_options
@json_option
@handle_errors
def plan(
    sources: tuple[str, ...],
    devices: tuple[str, ...],
    strategy: str,
    order: str,
    balance: str,
    show_items: bool,
    incremental: bool,
    catalog_path: str | None,
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    if_present: tuple[str, ...],
    exclude_caches: bool,
    one_file_system: bool,
    parity: int,
    as_json: bool,
) -> int:
    """Show the plan for backing up SOURCES onto the devices, writing nothing.

    Prints the threshold T, each device's bytes and segments, and the balance. With
    ``--balance time`` the speeds come from ``?speed=`` or the catalog (a dry run writes
    no probe: a device of unknown speed is assumed as fast as the mean of the others).
    What the selection options left out is counted per rule (``--json``: and listed, the
    first 1000 paths).
    """
    skipped: list[Skipped] = []
    select = scan_rules(excludes, exclude_files, if_present, exclude_caches, one_file_system)
    specs = source_specs(sources)
    local = local_catalog_file(catalog_path)
    check_catalog_place(list(devices), local, BackupOptions.device_timeout)  # as backup
    check_distinct(list(devices), BackupOptions.device_timeout)  # refuses them
    devices, parity_urls = (tuple(u) for u in split_devices(devices, parity))
    automatic = automatic_excludes(specs, devices, local)
    specs = inside_remote(selecting(specs, with_automatic(select, automatic)), devices)
    excluded = Excluded(limit=EXCLUDED_SHOWN)
    entries = scan(specs, skipped, excluded=excluded, helpers=scan_helpers(None))  # as backup
    alive, dead = open_devices(list(devices), create_labels=False, require_label=False, write=False)
    try:
        if not alive:
            raise PlanError("no device could be opened")
        options = BackupOptions(
            strategy=Strategy(strategy), order=Order(order), balance=Balance(balance)
        )
        speeds = None
        if options.balance is Balance.TIME:
            try:
                with open_catalog(catalog_path, create=False) as catalog:
                    known = catalog.device_speeds()
            except CatalogError:
                known = {}
            speeds = dry_run_speeds([_Dev(d.url, d.label.label, d.space) for d in alive], known)
        reused: set[int] = set()
        if incremental:
            with open_catalog(catalog_path, create=False) as catalog:
                names = sorted(s.display for s in specs)
                found = incremental_reuse(catalog, names, entries, exact=exact_sources(specs))
            reused = found.files if found else set()
        the_plan = make_plan(entries, [d.space for d in alive], options, reused, speeds)
    finally:
        close_all(alive)
    per_bytes = the_plan.device_bytes()
    per_items = the_plan.segment_counts()
    doc = {
        "threshold": the_plan.threshold,
        "devices": [
            {
                "url": d.url,
                "bytes": per_bytes[i],
                "segments": per_items[i],
                **(
                    {
                        "speed": round(speeds[i].rate, 1),
                        "speed_from": speeds[i].source,
                        "predicted": round(per_bytes[i] / speeds[i].rate, 3),
                    }
                    if speeds
                    else {}
                ),
            }
            for i, d in enumerate(alive)
        ],
        "items": [
            {
                "path": entries.path(f),
                "offset": o,
                "size": n,
                "device": alive[d].url,
            }
            for f, o, n, d in zip(
                the_plan.file, the_plan.offset, the_plan.size, the_plan.device, strict=True
            )
        ]
        if as_json or show_items  # a million items are built only when they are shown
        else [],
    }
    doc["excluded"] = {
        "entries": excluded.total,
        "rules": dict(excluded.counts),
        "paths": [{"path": p, "rule": r} for p, r in excluded.paths],
        "truncated": excluded.total > len(excluded.paths),
    }
    if parity_urls:
        # one parity unit per row of the longest column, about its size (FORMAT.md)
        doc["parity"] = {
            "m": len(parity_urls),
            "devices": list(parity_urls),
            "bytes_each": max(per_bytes, default=0),
        }
    if dead:
        doc["unavailable"] = [{"url": d.url, "error": d.reason} for d in dead]
    if as_json:
        emit_json(doc, 3 if dead or skipped else 0)
        return 3 if dead or skipped else 0
    total = sum(per_bytes)
    table(
        f"plan: {the_plan.strategy} {the_plan.order}, T = {human_bytes(the_plan.threshold)}",
        ["device", "bytes", "share", "segments"]
        + (["speed (from)", "predicted s"] if speeds else []),
        [
            [
                d.url,
                human_bytes(per_bytes[i]),
                f"{100 * per_bytes[i] / total:.1f}%" if total else "-",
                str(per_items[i]),
            ]
            + (
                [
                    f"{speeds[i].rate / 1e6:.1f} MB/s ({speeds[i].source})",
                    f"{per_bytes[i] / speeds[i].rate:.2f}",
                ]
                if speeds
                else []
            )
            for i, d in enumerate(alive)
        ],
    )
    low, high = min(per_bytes), max(per_bytes)
    line(
        f"{len(entries)} entries, {human_bytes(total)}; balance (max/min): "
        + (f"{high / low:.4f}" if low else "n/a")
    )
    if parity_urls:
        line(
            f"parity: {len(parity_urls)} device(s), about {human_bytes(max(per_bytes))} each: "
            + ", ".join(parity_urls)
        )
    excluded_lines(excluded.counts)
    if show_items:
        for it in doc["items"]:
            line(f"{it['device']}  {it['path']}  @{it['offset']}  {it['size']}")
    for d in dead:
        line(f"unavailable: {d.url}: {d.reason}", problem=True)
    for sk in skipped:
        line(f"skipped: {sk.path}: {sk.error}", problem=True)
    return 3 if dead or skipped else 0
