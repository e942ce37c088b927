"""What a backup (and ``plan``) does before any device is written: the sources' specs,
the scan of every source into one columnar table, and the plan within every device's
room (engine/backup.py runs the rest).
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import BinaryIO

from parbackup.engine.gcpause import paused_gc
from parbackup.engine.report import BackupOptions
from parbackup.entries import Entries
from parbackup.format import CHUNK
from parbackup.model import Pieces, Plan, Skipped, Slot, Space
from parbackup.plan import plan
from parbackup.plan.pacing import Balance, Speed
from parbackup.selection import Excluded
from parbackup.sources.base import SourceSpec
from parbackup.sources.registry import open_source, spec_for
from parbackup.sources.stdin import StdinSource


def source_specs(
    sources: Sequence[str], read_roots: Sequence[tuple[str, str]] = (), stdin_name: str = ""
) -> list[SourceSpec]:
    """The specs of the sources, each once; a tree inside another tree is left out (its
    entries come with the outer one)."""
    roots = dict(read_roots)
    specs: list[SourceSpec] = []
    for name in sources:
        if name == "-":
            path = "/" + (stdin_name or "stdin").lstrip("/")
            specs.append(SourceSpec("stdin", "-", path, display="-"))
            continue
        spec = spec_for(name)
        if spec.kind == "tree" and spec.record_root in roots:
            spec = SourceSpec(
                "tree", spec.name, spec.record_root, roots[spec.record_root], spec.display
            )
        if all(s.record_root != spec.record_root for s in specs):
            specs.append(spec)
    trees = [s.record_root for s in specs if s.kind == "tree"]
    return [s for s in specs if not any(_inside(s.record_root, t) for t in trees)]


def _inside(path: str, tree: str) -> bool:
    return path != tree and path.startswith(tree.rstrip("/") + "/")


def scan(
    specs: Sequence[SourceSpec],
    skipped: list[Skipped],
    stdin: BinaryIO | None = None,
    excluded: Excluded | None = None,
) -> Entries:
    """Every entry of every source into one columnar table (GC paused: no cycles);
    what the selection left out is added to ``excluded``."""
    entries = Entries()
    with paused_gc():
        for index, spec in enumerate(specs):
            source = StdinSource(spec, stdin) if spec.kind == "stdin" else open_source(spec)
            with source:
                source.scan(entries, index, lambda p, e: skipped.append(Skipped(p, e)))
            if excluded is not None:
                excluded.merge(source.excluded)
    return entries


def reserve_for(entries: Entries, devices: int) -> int:
    """Bytes to keep free on each device for what is not payload.

    Record headers (about 100 bytes plus the path, one per started chunk), the volume
    header and end record, the label and the catalog copy written at the end. Estimated
    generously, so a device with little room is not overfilled.
    """
    names = entries.names_size()
    chunks = sum(s // CHUNK for s in entries.size)
    headers = 100 * (len(entries) + chunks) + names
    catalog_copy = 64 * 1024 + 300 * len(entries)
    return 64 * 1024 + 2 * headers // max(1, devices) + catalog_copy


def make_plan(
    entries: Entries,
    spaces: Sequence[Space],
    options: BackupOptions,
    reused: Set[int] = frozenset(),
    speeds: Sequence[Speed] | None = None,
) -> Plan:
    """The plan for ``entries`` (minus ``reused`` ones) over devices with ``spaces``,
    within their room; with ``--balance time`` shares follow the speeds."""
    reserve = reserve_for(entries, len(spaces))
    rooms = [None if s.free is None else max(0, s.free - reserve) for s in spaces]
    if options.balance is Balance.TIME and speeds:
        slots = [Slot(room=r, weight=s.rate) for r, s in zip(rooms, speeds, strict=True)]
    else:
        slots = [Slot(room=r) for r in rooms]
    with paused_gc():
        pieces = Pieces.whole_files(entries.size, reused)
        return plan(pieces, slots, options.strategy, options.order)
