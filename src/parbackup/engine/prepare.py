"""What a backup (and ``plan``) does before any device is written: the sources' specs,
the scan of every source into one columnar table, and the plan within every device's
room (engine/backup.py runs the rest).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence, Set
from dataclasses import replace
from typing import BinaryIO, Protocol

from parbackup.engine.gcpause import paused_gc
from parbackup.engine.report import BackupOptions
from parbackup.engine.splitscan import scan_tree
from parbackup.entries import Entries
from parbackup.errors import SourceError, UsageError
from parbackup.format import CHUNK, SOURCES_ROOM
from parbackup.model import Pieces, Plan, Skipped, Slot, Space
from parbackup.plan import plan
from parbackup.plan.pacing import Balance, Speed
from parbackup.selection import Excluded
from parbackup.sources.base import ErrorFunc, SourceSpec
from parbackup.sources.local import LocalTree
from parbackup.sources.registry import open_source, spec_for
from parbackup.sources.stdin import StdinSource
from parbackup.workers import Executor


def source_specs(
    sources: Sequence[str], read_roots: Sequence[tuple[str, str]] = (), stdin_name: str = ""
) -> list[SourceSpec]:
    """The specs of the sources, each once; a tree inside another tree is left out (its
    entries come with the outer one). UsageError when their names would not fit the
    header of a volume (format.py ``SOURCES_ROOM``)."""
    roots = dict(read_roots)
    specs: list[SourceSpec] = []
    seen: set[str] = set()
    for name in sources:
        if name == "-":
            path = "/" + (stdin_name or "stdin").lstrip("/")
            specs.append(SourceSpec("stdin", "-", path, display="-"))
            seen.add(path)
            continue
        spec = spec_for(name)
        if spec.kind == "tree" and spec.record_root in roots:
            spec = SourceSpec(
                "tree", spec.name, spec.record_root, roots[spec.record_root], spec.display
            )
        if spec.record_root not in seen:
            seen.add(spec.record_root)
            specs.append(spec)
    trees: dict[str, set[str]] = {}  # without its trailing '/' -> the trees so named
    for s in specs:
        if s.kind == "tree":
            trees.setdefault(s.record_root.rstrip("/"), set()).add(s.record_root)
    specs = [s for s in specs if not _inside(s.record_root, trees)]
    names = len(json.dumps(sorted(s.display for s in specs)).encode())
    if names > SOURCES_ROOM:  # refused before anything is written
        raise UsageError(
            f"the names of the {len(specs)} sources take {names} bytes, more than the"
            f" {SOURCES_ROOM} every volume header holds: back up the directories that"
            " hold them (--exclude leaves out what is not wanted)"
        )
    return specs


def _inside(path: str, trees: dict[str, set[str]]) -> bool:
    """True when ``path`` lies below a tree other than itself: each '/' of the path is
    looked up as the end of a tree's name (a backup of thousands of sources compared
    every source with every tree, and spent minutes before its first byte)."""
    at = path.find("/")
    while at >= 0:
        if any(tree != path for tree in trees.get(path[:at], ())):
            return True
        at = path.find("/", at + 1)
    return False


class SourceHosts(Protocol):
    """An executor that reaches the hosts sources may name (parbackup/cluster.py)."""

    def serve_sources(self, specs: list[SourceSpec]) -> list[SourceSpec]:
        """The specs, each tree on a host readable from the others for the run."""

    def scan_source(
        self, spec: SourceSpec, out: Entries, index: int, on_error: ErrorFunc
    ) -> Excluded:
        """Scan a tree on its host into ``out``; what its selection left out."""


def hosts_of(executor: object) -> SourceHosts | None:
    """``executor`` if it can reach the hosts sources name (a cluster), else None."""
    return executor if callable(getattr(executor, "serve_sources", None)) else None  # type: ignore[return-value]


def place_sources(specs: list[SourceSpec], hosts: SourceHosts | None) -> list[SourceSpec]:
    """Sources that name a host (``PATH?host=NAME``) made readable for the run: served
    from their hosts on a cluster; without one, read here (the name means nothing)."""
    if not any(s.host for s in specs):
        return specs
    if hosts is not None:
        return hosts.serve_sources(specs)
    here = [replace(s, host="") for s in specs]
    for spec in here:
        if spec.kind == "tree" and not os.path.lexists(spec.record_root):
            raise SourceError(f"source does not exist: {spec.record_root}")
    return here


def scan(
    specs: Sequence[SourceSpec],
    skipped: list[Skipped],
    stdin: BinaryIO | None = None,
    excluded: Excluded | None = None,
    hosts: SourceHosts | None = None,
    helpers: Executor | None = None,
) -> Entries:
    """Every entry of every source into one columnar table (GC paused: no cycles);
    what the selection left out is added to ``excluded``. A tree on a host is scanned
    there (``hosts``); a large local tree's split scan starts its helper with
    ``helpers`` (engine/splitscan.py; None: a fresh local interpreter)."""
    entries = Entries()
    with paused_gc():
        for index, spec in enumerate(specs):
            on_error = lambda p, e: skipped.append(Skipped(p, e))  # noqa: E731
            if spec.host and hosts is not None:
                left_out = hosts.scan_source(spec, entries, index, on_error)
                if excluded is not None:
                    excluded.merge(left_out)
                continue
            source = StdinSource(spec, stdin) if spec.kind == "stdin" else open_source(spec)
            with source:
                if isinstance(source, LocalTree) and not spec.select:  # maybe two processes
                    scan_tree(source, entries, index, on_error, helpers)
                else:
                    source.scan(entries, index, on_error)
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
    chunks = sum(map(CHUNK.__rfloordiv__, entries.size))  # size // CHUNK, in C
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
