"""Which set a reference names: ``latest``, ``latest~N``, an id or id prefix, or a time.

One rule for every command that names a set (``--set``, ``ls SET``, ``diff A B``,
``report SET``):

- ``latest`` (or no reference at all, None): the newest restorable (complete or
  degraded) set; an empty or blank name is a usage error, never ``latest`` (``restore
  --set ''`` from an unset shell variable must not quietly restore the newest set);
- ``latest~N``: the Nth restorable set before it (``latest~0`` is ``latest``);
- a full set id, or a prefix of one (hex digits); a prefix that fits several sets is a
  usage error listing them;
- a time, ISO 8601 (``2026-03-01``, ``2026-03-01T02:00``, ``...+01:00``): the newest
  restorable set made at or before it. A time without a zone is local time; a date alone
  stands for the end of that day (so ``2026-03-01`` is the last set of that day).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING

from parbackup.errors import CatalogError, UsageError

if TYPE_CHECKING:  # store.py calls pick_set: the type alone comes from there
    from parbackup.catalog.store import SetInfo

RESTORABLE_STATUSES = ("complete", "degraded")
_LATEST = re.compile(r"^latest(?:~(\d+))?$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_FORMS = "a set is named by latest, latest~N, an id or id prefix, or a date such as 2026-03-01"
"""What a reference may be, told after one that is none."""
_SHOWN = 10
"""At most this many candidates are listed for an ambiguous prefix."""


def set_time(info: SetInfo) -> datetime:
    """When a set was made, as an aware datetime (the catalog writes UTC)."""
    when = datetime.fromisoformat(info.created)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def restorable(info: SetInfo) -> SetInfo:
    """``info`` when its set can be read back (complete or degraded); CatalogError for a
    forgotten, killed or failed set named by its id (every command that reads a set's
    files refuses it alike: restore, verify, ls, files, diff)."""
    if info.status not in RESTORABLE_STATUSES:
        raise CatalogError(f"set {info.id} is {info.status}, not restorable")
    return info


def parse_when(ref: str) -> datetime | None:
    """``ref`` as a point in time, or None when it is not an ISO 8601 date or time."""
    if not ref[:4].isdigit() or "-" not in ref:
        return None
    try:
        when = datetime.fromisoformat(ref)
    except ValueError:
        return None
    if _DATE_ONLY.match(ref):
        when = datetime.combine(when.date(), time.max)
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as `backup --time` reads it
    return when


def pick_set(
    sets: Sequence[SetInfo], ref: str | None, where: str, sources: Sequence[str] | None = None
) -> SetInfo:
    """The set ``ref`` names among ``sets`` (oldest first); ``where`` names the catalog.
    With ``sources`` (sorted, as sets record them), ``latest``, ``latest~N`` and a date
    count only the sets of exactly those sources (a profile's); an id names any set."""
    ref = "latest" if ref is None else ref.strip()
    if not ref:
        raise UsageError(f"empty set name ({_FORMS})")
    usable = [s for s in sets if s.status in RESTORABLE_STATUSES]
    if sources is not None:
        usable = [s for s in usable if sorted(s.sources) == list(sources)]
        where = f"{where} (sets of {' '.join(sources)})"
    latest = _LATEST.match(ref)
    if latest:
        back = int(latest.group(1) or 0)
        if not usable:
            raise CatalogError(f"{where} holds no complete backup set")
        if back >= len(usable):
            raise CatalogError(f"{ref}: {where} holds only {len(usable)} restorable set(s)")
        return usable[-1 - back]
    exact = [s for s in sets if s.id == ref.lower()]
    if exact:
        return exact[0]
    when = parse_when(ref)
    if when is not None:
        before = [s for s in usable if set_time(s) <= when]
        if not before:
            raise CatalogError(f"no restorable set made at or before {ref} in {where}")
        return max(before, key=set_time)
    if not _HEX.match(ref):
        raise CatalogError(f"no backup set {ref!r} in {where} ({_FORMS})")
    matches = [s for s in sets if s.id.startswith(ref.lower())]
    if not matches:
        raise CatalogError(f"no backup set {ref!r} in {where}")
    if len(matches) > 1:
        shown = ", ".join(f"{s.id} ({s.created}, {s.status})" for s in matches[:_SHOWN])
        more = f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else ""
        raise UsageError(f"set id {ref!r} is ambiguous: it fits {shown}{more}")
    return matches[0]
