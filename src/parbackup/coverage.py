"""Whether a file's records cover its bytes exactly once: the one rule of an incremental
backup's reuse (plan/reuse.py) and a restore's reading (readback/select.py).

A module of its own, importing nothing, so that a restore's controller does not load the
planner and the sources to ask it (tests/test_serial_start.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parbackup.model import RecordRef


def complete(records: Iterable[RecordRef], size: int) -> bool:
    """True when the records cover bytes [0, size) exactly once."""
    if isinstance(records, list) and len(records) == 1:  # most files: without the sort
        return records[0].offset == 0 and records[0].size == size
    return spans_complete([(r.offset, r.size) for r in records], size)


def spans_complete(spans: list[tuple[int, int]], size: int) -> bool:
    """``complete`` for (offset, size) pairs (a restore's records are plain rows)."""
    if len(spans) == 1:
        return spans[0][0] == 0 and spans[0][1] == size
    at = 0
    for offset, length in sorted(spans):
        if offset != at:
            return False
        at += length
    return at == size
