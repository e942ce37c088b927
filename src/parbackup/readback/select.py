"""Choosing what to read back: the set, its files, and their records per device.

Which paths patterns select is parbackup/selection.py's one rule (``matches``). Reads
the catalog only; nothing here touches a device or the target. The records of the
chosen files are grouped by the label of the device holding them, one group per reader
process (readback/reader.py).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from parbackup.catalog import Catalog, CatalogFile, SetInfo
from parbackup.catalog.setref import restorable
from parbackup.coverage import complete, spans_complete
from parbackup.model import RESTORABLE_FILE_STATES, FileEntry, Kind, RecordRef
from parbackup.readback.messages import PackedRef, identity
from parbackup.readback.specials import substitute_hardlinks


def restorable_set(catalog: Catalog, set_ref: str | None) -> SetInfo:
    """The set ``set_ref`` names; CatalogError unless it is complete or degraded."""
    return restorable(catalog.resolve_set(set_ref))


def lost_rows(info: SetInfo, rows: int) -> list[dict]:
    """What ``damaged`` names when the catalog holds fewer file rows than the set counted
    when it was recorded (``sets.files``: every entry it holds; the rows are those plus
    the entries it does not hold): rows went, as a damaged or cut catalog file loses
    them, and the files they were are restored by nobody, with no word."""
    if rows >= info.files:
        return []
    return [
        {
            "path": f"set {info.id}",
            "device": "",
            "error": f"the catalog lists {rows} entries of the {info.files} the set holds:"
            " rows are lost (a damaged catalog); rebuild-catalog reads them from the devices",
        }
    ]


SHARED_PATH = (
    "another entry of the set has the same path (a damaged or forged set): neither is used"
)


def shared_paths(paths: Iterable[str]) -> set[str]:
    """The paths more than one entry of a set has. No backup writes such a set, but a
    forged or damaged volume read by rebuild-catalog can say so; restoring both would
    rename one over the other and call both restored, so restore and verify name the
    path as damaged and use neither entry (which is right cannot be told)."""
    seen: set[str] = set()
    twice: set[str] = set()
    for path in paths:
        if path in seen:
            twice.add(path)
        seen.add(path)
    return twice


def unlisted(info: SetInfo) -> list[dict]:
    """What ``skipped`` names for a set rebuilt from its volumes that does not list all
    its files (rebuild-catalog: an incremental set's reused files are on its parent's
    volumes, and lost devices leave gaps): restoring it is never called whole."""
    report = info.report or {}
    gaps = int(report.get("unknown_file_ids") or 0)
    if not report.get("rebuilt") or (not gaps and info.kind == "full"):
        return []
    what = f"{gaps} file(s)" if gaps else "files"
    why = " (an incremental set: restore its parent set for the files it reused)"
    return [
        {
            "path": f"set {info.id}",
            "device": "",
            "error": f"rebuilt from its volumes: {what} of the set are not listed, so not"
            " restored" + (why if info.kind != "full" else ""),
        }
    ]


def unlisted_lost(info: SetInfo) -> list[dict]:
    """What ``verify`` names damaged for a set rebuilt from its volumes while some of
    its devices were missing: the files whose records lay only there are not listed
    (``unknown_file_ids``), so their bytes were checked by nobody and the set is not
    whole. (An incremental's reused files are no gap: they lie on its parent's volumes.)"""
    if not int((info.report or {}).get("unknown_file_ids") or 0):
        return []
    return unlisted(info)


def rebuilt_incomplete(info: SetInfo) -> list[dict]:
    """What ``verify`` names damaged for a set rebuilt from its volumes that lists files
    whose bytes lie only in part on the devices found (rebuild-catalog's ``incomplete``:
    the rest was on a missing device, or damaged). Those files are not restorable, so
    verify read none of them: the set is not whole, whatever it did check."""
    report = info.report or {}
    if not report.get("rebuilt"):
        return []
    return [
        {"path": str(f.get("path", "")), "device": "", "error": f"rebuilt: {f.get('error', '')}"}
        for f in report.get("incomplete") or []
        if isinstance(f, dict)
    ]


def _matches(path: str, patterns: Sequence[str], is_dir: bool = False) -> bool:
    """parbackup/selection.py ``matches``, imported only when there are patterns: a
    whole-set restore does not load the selection rules (serial start)."""
    if not patterns:
        return True
    from parbackup.selection import matches

    return matches(path, patterns, is_dir)


def select_files(catalog: Catalog, set_id: str, patterns: Sequence[str]) -> list[CatalogFile]:
    """The restorable files of a set that the patterns select (parbackup/selection.py)."""
    return [
        f
        for f in catalog.files(set_id)
        if f.state in RESTORABLE_FILE_STATES and _matches(f.entry.path, patterns)
    ]


LEFT_OUT = {
    "inconsistent": "changed while it was backed up: this set does not hold it",
    "skipped": "could not be read when it was backed up: this set does not hold it",
}
"""Why a file the set lists is not restorable, by its catalog state."""


@dataclass
class Selection:
    """What a restore recreates, from one read of the set's files."""

    chosen: list[CatalogFile]
    """The entries the patterns select, with each hard link whose first name is not
    chosen turned into that file (readback/specials.py)."""
    left_out: list[tuple[str, str]]
    """(path, why) of the files the patterns select that the set lists but does not hold
    (changed or unreadable while backed up): a restore names them, never drops them
    silently."""
    matched: bool
    """True when a restorable file matches the patterns (always, without patterns)."""
    idents: dict[int, int]
    """The catalog rows' ``identity`` by file id, taken before any hard link stood in for
    its file (``chosen`` may name a file by a later link)."""
    rows: int
    """How many file rows the catalog holds for the set (``lost_rows``)."""


def select_for_restore(catalog: Catalog, set_id: str, patterns: Sequence[str]) -> Selection:
    """The entries a restore recreates and those it must name as left out."""
    everything: list[CatalogFile] = []
    missing: list[tuple[str, str]] = []
    rows = 0
    for f in catalog.files(set_id):
        rows += 1
        if f.state in RESTORABLE_FILE_STATES:
            everything.append(f)
        elif _matches(f.entry.path, patterns):
            missing.append(
                (f.entry.path, LEFT_OUT.get(f.state, f"{f.state} when it was backed up"))
            )
    idents = identities((f.file_id, f.entry) for f in everything)
    if not patterns:
        return Selection(everything, missing, True, idents, rows)
    matched = any(_matches(f.entry.path, patterns) for f in everything)
    chosen = [f for f in everything if _matches(f.entry.path, patterns, f.entry.kind == Kind.DIR)]
    return Selection(substitute_hardlinks(chosen, everything), missing, matched, idents, rows)


def identities(files: Iterable[tuple[int, FileEntry]]) -> dict[int, int]:
    """The ``identity`` (readback/messages.py) of every regular file with data, by file
    id: what each of its own records' headers must say of it."""
    enc, errors = _FS_ENCODING, _FS_ERRORS  # os.fsencode's work without its checks
    file = Kind.FILE
    return {
        fid: identity(e.path.encode(enc, errors), e.mode, e.uid, e.gid, e.mtime_ns)
        for fid, e in files
        if e.kind is file and e.size
    }


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def records_by_label(
    catalog: Catalog, set_id: str, file_ids: set[int], *, empty: bool = False
) -> dict[str, list[tuple[int, RecordRef]]]:
    """The records of the chosen files, grouped by device label.

    Only payload-carrying records unless ``empty`` (verify's frame checks want all).
    """
    out: dict[str, list[tuple[int, RecordRef]]] = {}
    for fid, ref in catalog.records(set_id, payload_only=not empty):
        if fid in file_ids:
            out.setdefault(ref.label, []).append((fid, ref))
    return out


def packed_by_label(
    catalog: Catalog, set_id: str, file_ids: set[int]
) -> dict[str, list[PackedRef]]:
    """``records_by_label`` (payload records only) straight from the catalog's rows into
    the tuples the readers take (readback/messages.py ``PackedRef``): no object per
    record, and no packing before they are sent; in no particular order (each reader
    orders its own). Each volume and origin name is one string object, so that pickle
    stores it once."""
    out: dict[str, list[PackedRef]] = {}
    name = {}.setdefault
    for row in catalog.record_rows(set_id, payload_only=True):
        label, fid, volume, position, header, offset, size, digest, origin, ofile, stored = row
        if fid not in file_ids:
            continue
        if type(digest) is not bytes:  # a memoryview from some backends
            digest = bytes(digest)
        got = out.get(label)
        if got is None:
            got = out[label] = []
        got.append(
            (fid, name(volume, volume), position, header, offset, size, digest,
             name(origin, origin), ofile, stored)
        )  # fmt: skip
    return out


def index_records(
    records: dict[str, list[PackedRef]],
) -> tuple[
    dict[int, PackedRef], dict[int, str], dict[int, list[tuple[int, int]]], dict[int, set[str]]
]:
    """Where each file's records (``packed_by_label``) lie, in C loops for the files with
    one record (most; a set's records are many): (a record of each file, the label it is
    on, then for the files with several records only: their (offset, size) spans and the
    labels holding them). A file in ``spans`` is judged by ``covered_spans``; any other
    in ``one`` is whole when its record starts at 0 and holds all its bytes."""
    one: dict[int, PackedRef] = {}
    on: dict[int, str] = {}
    counts: Counter[int] = Counter()
    for label, recs in records.items():
        ids = list(map(_FILE_ID, recs))
        counts.update(ids)
        one.update(zip(ids, recs, strict=True))
        on.update(dict.fromkeys(ids, label))
    many = {fid for fid, n in counts.items() if n > 1}
    spans: dict[int, list[tuple[int, int]]] = {}
    labels: dict[int, set[str]] = {}
    for label, recs in records.items() if many else ():
        for rec in recs:  # readback/messages.py PackedRef: file id, ..., offset, size, ...
            fid = rec[0]
            if fid not in many:
                continue
            got = spans.get(fid)
            if got is None:
                spans[fid], labels[fid] = [(rec[4], rec[5])], {label}
            else:
                got.append((rec[4], rec[5]))
                labels[fid].add(label)
    return one, on, spans, labels


_FILE_ID = itemgetter(0)  # of a PackedRef


covered = complete
"""True when the records cover bytes [0, size) exactly once (one rule for the planner's
reuse and for readback: plan/reuse.py ``complete``)."""

covered_spans = spans_complete
"""``covered`` for (offset, size) pairs."""
