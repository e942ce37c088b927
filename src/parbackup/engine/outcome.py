"""What the end of a backup run records of how its files and devices fared.

``_Backup.finish`` (engine/backup.py) calls these once the dispatcher has run: the files
the movers could not store as read are listed for the report and marked in the catalog,
a stream that lost bytes is marked, and every device of the run gets a report (those
that never opened, a failed one). They live here, apart from the run itself, so that
engine/backup.py stays a readable size; they import nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from parbackup.catalog import Catalog
from parbackup.engine.dispatch import Dispatcher
from parbackup.engine.feed import StreamFeed
from parbackup.engine.fleet import Fleet
from parbackup.entries import Entries, hardlinks_of
from parbackup.model import DeviceReport, Skipped


@dataclass
class Outcome:
    """What the dispatcher run left for the report."""

    error: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    inconsistent: list[Skipped] = field(default_factory=list)
    grown: list[Skipped] = field(default_factory=list)


def mark_problems(
    catalog: Catalog, set_hex: str, entries: Entries, dispatcher: Dispatcher, outcome: Outcome
) -> dict[int, tuple[str, str]]:
    """List in ``outcome`` the files skipped, changed or grown while read (and the
    dispatcher's warnings), and mark them in the catalog; file id -> (error, kind) of
    those the set does not hold (a grown file is kept as read)."""
    problems = dict(dispatcher.problems)
    problems.update(hardlinks_of(entries, problems))
    lists = {"skipped": outcome.skipped, "changed": outcome.inconsistent, "grew": outcome.grown}
    states = {"skipped": "skipped", "changed": "inconsistent", "grew": "grown"}
    for fid, (error, kind) in sorted(problems.items()):
        lists[kind].append(Skipped(entries.path(fid), error))
    outcome.skipped += [Skipped(entries.path(f), why) for f, why in dispatcher.warnings]
    for kind, state in states.items():
        marked = [f for f, (_e, k) in problems.items() if k == kind]
        if marked:
            catalog.mark_files(set_hex, marked, state)
    return {f: p for f, p in problems.items() if p[1] != "grew"}


def mark_stream(
    catalog: Catalog, set_hex: str, entries: Entries, feed: StreamFeed, outcome: Outcome
) -> None:
    """Record the stream's size; a stream that lost bytes with a failed device is marked
    skipped, and why."""
    catalog.set_file_size(set_hex, 0, feed.total)
    if feed.lost_bytes:
        catalog.mark_files(set_hex, [0], "skipped")
        outcome.skipped.append(
            Skipped(
                entries.path(0),
                (
                    f"{feed.lost_bytes} bytes of the stream were lost with "
                    f"{feed.lost_with}, which could not make them durable before it failed"
                ),
            )
        )


def device_reports(fleet: Fleet) -> list[DeviceReport]:
    """A report per device of the run, in the order given: with its busy seconds for
    one that opened, a failed one for one that did not."""
    reports: list[DeviceReport] = []
    for d in fleet.devices:
        if d.report is not None:
            d.report.seconds = round(d.busy, 3)
            reports.append(d.report)
    now_utc = datetime.now(UTC).isoformat(timespec="seconds")
    reports += [
        DeviceReport(d.url, "", "failed", error=d.reason, failed_at=0.0, failed_utc=now_utc)
        for d in fleet.dead
    ]
    order = {d.url: d.index for d in fleet.devices}
    reports.sort(key=lambda r: order.get(r.url, 0))
    return reports
