"""Finding the earlier set an incremental backup builds on, and what it can reuse (F3).

The parent is the newest restorable set (complete or degraded) of exactly the same
sources. Its files and records are handed to ``plan.reuse.select`` as data.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping, Sequence, Set
from datetime import datetime

from parbackup.catalog import Catalog, SetInfo
from parbackup.devices.registry import device_class
from parbackup.devices.url import parse_url
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.entries import Entries
from parbackup.errors import DeviceMissingError, ParbackupError, UsageError
from parbackup.model import Skipped
from parbackup.plan.reuse import (
    Opener,
    Previous,
    Reuse,
    origin_of,
    select,
    volume_needs,
    without_volumes,
)
from parbackup.progress import EventSink, Notice

log = logging.getLogger(__name__)

RESTORABLE = ("complete", "degraded")
RACY_MARGIN_NS = 3_000_000_000
"""How long before its set began a file's recorded change may lie and still have been
read in the same tick of its file system's clock (FAT's 2 s, plus ``created``'s whole
seconds): such a file's times cannot prove it unchanged (``select``'s ``racy_from_ns``)."""


def parent_set(catalog: Catalog, sources: Sequence[str]) -> SetInfo | None:
    """The newest restorable set of the same sources, or None."""
    wanted = sorted(sources)
    for info in reversed(catalog.sets()):
        if info.status in RESTORABLE and sorted(info.sources) == wanted:
            return info
    return None


def rewritten_labels(catalog: Catalog) -> set[str]:
    """Labels of sequential media (tapes): a backup onto one starts it anew, so records
    there must not be reused by a later set (the tape may have been rewritten since)."""
    out = set()
    for label, url in catalog.device_urls().items():
        try:
            if device_class(parse_url(url).scheme).capabilities.sequential:
                out.add(label)
        except UsageError:
            continue
    return out


def load_previous(
    catalog: Catalog, set_id: str, usable: Set[str] | None = None, sealed: bool | None = None
) -> dict[str, Previous]:
    """Path -> (entry, records with their origin) for every intact file of a set.

    Records on tapes are left out, and, when ``usable`` is given, records on devices not
    in it (devices this run could not open: a new set must never depend on a device that
    is dead now), so the files held there are backed up again. With ``sealed`` given,
    only records sealed (encrypted) as the new set's are reused: the first encrypted set
    after plain ones copies everything again instead of pointing at plaintext records. A
    sealed record is the only kind whose stored bytes exceed its source bytes (nonce,
    sealed metadata, tag), which the catalog tells.
    """
    records: dict[int, list] = {}
    tapes = rewritten_labels(catalog)
    for fid, ref in catalog.records(set_id):
        if sealed is not None and (ref.stored > ref.size) != sealed:
            continue
        if ref.size and ref.label not in tapes and (usable is None or ref.label in usable):
            records.setdefault(fid, []).append(origin_of(set_id, fid, ref))
    return {
        f.entry.path: Previous(f.entry, tuple(records.get(f.file_id, ())))
        for f in catalog.files(set_id)
        if f.state == "ok"
    }


def incremental_reuse(
    catalog: Catalog,
    sources: Sequence[str],
    entries: Entries,
    *,
    rehash: Opener | None = None,
    usable: Set[str] | None = None,
    sealed: bool | None = None,
    exact: Set[int] = frozenset(),
) -> Reuse | None:
    """What the new set can reuse from its parent; None when there is no parent.
    ``exact``: the source numbers whose identity tells the content (``select``)."""
    parent = parent_set(catalog, sources)
    if parent is None:
        return None
    previous = load_previous(catalog, parent.id, usable, sealed)
    racy_from = _ns(parent.created) - RACY_MARGIN_NS
    return select(entries, parent.id, previous, rehash=rehash, racy_from_ns=racy_from, exact=exact)


def _ns(iso: str) -> int:
    """An ISO 8601 time of the catalog, in nanoseconds since the epoch."""
    return int(datetime.fromisoformat(iso).timestamp()) * 1_000_000_000


def same_xattrs(catalog: Catalog, reuse: Reuse, xattrs: bool) -> Reuse | None:
    """``reuse`` fit for a run that keeps extended attributes (``xattrs``) or not.

    Reused files carry their attributes from the set they come from (nothing reads
    them). From a set taken with ``--no-xattrs`` (none read), a run that keeps them
    reuses nothing: None, every file is read again. A ``--no-xattrs`` run keeps none."""
    source = reuse.parent or getattr(reuse, "resumed", "")
    if not source or not reuse.files:
        return reuse
    if not xattrs:
        reuse.metas.clear()
    elif not catalog.has_xattrs(source):
        return None
    return reuse


def lacking_volumes(reuse: Reuse, urls: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """(label, volume) -> why, for every volume that records ``reuse`` lists lie in and
    that its device (``urls``: label -> URL of this run) no longer holds, or holds cut
    shorter than those records reach. The catalog's word is not enough: a volume deleted
    or cut on its device (by hand, a lifecycle rule, a restored disk image) made every
    later incremental set point at bytes that are gone while it said complete (exit 0).
    One listing per earlier set's directory on each device (a volume it lacks is asked
    for by name once more, as a store's listing may lag); a device this process cannot
    open is not judged (its mover opened it: the run's own checks go on)."""
    need = volume_needs(reuse)
    labels = {label for label, _volume in need}
    opened, missing = devices_for_labels(
        {label: urls[label] for label in labels if label in urls}, [], write=False
    )
    for label, why in missing.items():
        log.warning("reused volumes on %s not checked: %s", label, why)
    out: dict[tuple[str, str], str] = {}
    try:
        for label, dev in opened.items():
            listed: dict[str, dict[str, int]] = {}
            for (lab, volume), end in sorted(need.items()):
                if lab != label:
                    continue
                prefix = posixpath.dirname(volume) + "/"
                if prefix not in listed:
                    try:
                        infos = dev.device.list(prefix)
                    except ParbackupError as exc:
                        log.warning("reused volumes on %s not checked: %s", label, exc)
                        break
                    listed[prefix] = {i.name: i.size for i in infos}
                size = listed[prefix].get(volume)
                if size is None:  # asked once more by name: a listing may lag behind
                    try:
                        size = dev.device.size(volume)
                    except DeviceMissingError:
                        out[(lab, volume)] = f"{dev.device.url.display}: no object {volume}"
                        continue
                    except ParbackupError as exc:
                        log.warning("reused volume %s on %s not checked: %s", volume, label, exc)
                        continue
                if size < end:
                    out[(lab, volume)] = (
                        f"{dev.device.url.display}: {volume} holds {size} bytes,"
                        f" its records reach {end}"
                    )
    finally:
        close_all(list(opened.values()))
    return out


def drop_lacking(reuse: Reuse, urls: Mapping[str, str], on_event: EventSink) -> list[Skipped]:
    """Leave out of ``reuse`` the files whose reused records lie in a volume its device
    no longer holds (whole), so they are copied again rather than listed as bytes that
    are gone; each such volume is named (a notice, and the report's ``lacking``)."""
    lacking = lacking_volumes(reuse, urls)
    files = without_volumes(reuse, set(lacking))
    named = []
    for (_label, volume), why in sorted(lacking.items()):
        named.append(Skipped(volume, why))
        on_event(
            Notice(
                f"{why}: the sets that list it are damaged (run verify);"
                " the files it held are copied again"
            )
        )
    if files:
        log.warning("%d file(s) copied again: their earlier volumes are gone", len(files))
    return named
