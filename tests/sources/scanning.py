"""Helpers for tests that drive a Source directly: scan into a table, find rows by path."""

from __future__ import annotations

from parbackup.entries import Entries
from parbackup.sources.base import Source


def scanned(source: Source, index: int = 0) -> tuple[Entries, list[tuple[str, str]]]:
    """The table a scan of ``source`` fills, and the (path, reason) pairs it reported."""
    out, errors = Entries(), []
    source.scan(out, index, lambda path, reason: errors.append((path, reason)))
    return out, errors


def rows(out: Entries) -> dict[str, int]:
    """Recorded path -> row number."""
    return {out.path(i): i for i in range(len(out))}
