"""Looking into the catalog without touching a device: ``ls``, ``diff``, ``find``.

Everything here reads the catalog only (files and record checksums), so it works with
every device unplugged. Sets are named by references (catalog/setref.py); paths are
selected with the one pattern rule of ``selection.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from parbackup.catalog import Catalog, CatalogFile, SetInfo
from parbackup.catalog.setref import RESTORABLE_STATUSES, restorable
from parbackup.model import RESTORABLE_FILE_STATES, FileEntry, Kind
from parbackup.selection import compile_patterns


def _restorable(catalog: Catalog, set_id: str) -> Iterator[CatalogFile]:
    return (f for f in catalog.files(set_id) if f.state in RESTORABLE_FILE_STATES)


def _below(path: str, top: str) -> bool:
    """True when ``path`` is ``top`` or lies under it."""
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top if top == "/" else top + "/")


def list_set(catalog: Catalog, ref: str, top: str = "") -> tuple[SetInfo, list[FileEntry]]:
    """The set ``ref`` names and its restorable entries at or below ``top`` (all when
    ``top`` is empty), in path order; CatalogError for a set that is not restorable (a
    forgotten, killed or failed one, named by its id), as restore refuses it."""
    info = restorable(catalog.resolve_set(ref))
    entries = [
        f.entry for f in _restorable(catalog, info.id) if not top or _below(f.entry.path, top)
    ]
    return info, sorted(entries, key=lambda e: e.path)


def _contents(catalog: Catalog, set_id: str) -> dict[int, tuple]:
    """file id -> its records' (offset, size, checksum), in offset order: what its bytes
    are, whichever set's volume they lie in."""
    out: dict[int, list] = {}
    for fid, ref in catalog.records(set_id):
        out.setdefault(fid, []).append((ref.offset, ref.size, ref.checksum))
    return {fid: tuple(sorted(parts)) for fid, parts in out.items()}


@dataclass
class Change:
    """A path present in both sets that differs: ``what`` names the fields."""

    path: str
    what: list[str]
    old: FileEntry
    new: FileEntry


@dataclass
class SetDiff:
    """What changed from set ``a`` to set ``b``."""

    a: SetInfo
    b: SetInfo
    added: list[FileEntry] = field(default_factory=list)
    removed: list[FileEntry] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    """Content changed (kind, size, bytes or link target), maybe metadata too."""
    metadata: list[Change] = field(default_factory=list)
    """Same content; only mode, owner or modification time changed."""

    def to_json(self) -> dict:
        def entry(e: FileEntry) -> dict:
            return {"path": e.path, "kind": str(e.kind), "size": e.size}

        def change(c: Change) -> dict:
            return {"path": c.path, "what": c.what, "old_size": c.old.size, "new_size": c.new.size}

        return {
            "status": "ok",
            "set_a": self.a.id,
            "set_b": self.b.id,
            "added": [entry(e) for e in self.added],
            "removed": [entry(e) for e in self.removed],
            "changed": [change(c) for c in self.changed],
            "metadata": [change(c) for c in self.metadata],
        }


_METADATA = ("mode", "uid", "gid", "mtime_ns")


def _data_differs(old: tuple | None, new: tuple | None, eo: FileEntry, en: FileEntry) -> bool:
    """Whether a file's bytes changed (same size). Records cut at the same offsets are
    compared by checksum; when the two sets cut the file differently (a split lands
    elsewhere from run to run) the checksums cannot be compared, and a changed
    modification time counts as changed bytes, as an incremental backup decides."""
    if old == new:
        return False
    if old is not None and new is not None and [p[:2] for p in old] == [p[:2] for p in new]:
        return True
    return eo.mtime_ns != en.mtime_ns


def diff_sets(catalog: Catalog, ref_a: str, ref_b: str) -> SetDiff:
    """Compare two sets path by path: kind, size and link target, then the bytes by the
    records' checksums (``_data_differs``), so a file rewritten with the same bytes is
    metadata-only."""
    a, b = restorable(catalog.resolve_set(ref_a)), restorable(catalog.resolve_set(ref_b))
    old = {f.entry.path: f for f in _restorable(catalog, a.id)}
    new = {f.entry.path: f for f in _restorable(catalog, b.id)}
    old_data, new_data = _contents(catalog, a.id), _contents(catalog, b.id)
    out = SetDiff(a, b)
    for path in sorted(new.keys() - old.keys()):
        out.added.append(new[path].entry)
    for path in sorted(old.keys() - new.keys()):
        out.removed.append(old[path].entry)
    for path in sorted(old.keys() & new.keys()):
        fo, fn = old[path], new[path]
        eo, en = fo.entry, fn.entry
        content = [k for k in ("kind", "size", "link") if getattr(eo, k) != getattr(en, k)]
        if not content and _data_differs(
            old_data.get(fo.file_id), new_data.get(fn.file_id), eo, en
        ):
            content.append("data")
        meta = [k.removesuffix("_ns") for k in _METADATA if getattr(eo, k) != getattr(en, k)]
        if content:
            out.changed.append(Change(path, content + meta, eo, en))
        elif meta:
            out.metadata.append(Change(path, meta, eo, en))
    return out


@dataclass(frozen=True)
class Found:
    """One path a ``find`` pattern selected, in one set."""

    set: SetInfo
    entry: FileEntry


def find_paths(
    catalog: Catalog, patterns: Sequence[str], sources: Sequence[str] | None = None
) -> Iterator[Found]:
    """Every restorable entry of every restorable set (oldest set first) that
    ``patterns`` select (restore --include's rule: shell glob or gitignore pattern,
    matching a path or a parent of it; '!' excludes); with ``sources`` (sorted, a
    profile's), only the sets of exactly those sources."""
    select = compile_patterns(tuple(patterns))
    for info in catalog.sets():
        if info.status not in RESTORABLE_STATUSES:
            continue
        if sources is not None and sorted(info.sources) != list(sources):
            continue
        for f in sorted(_restorable(catalog, info.id), key=lambda f: f.entry.path):
            if select(f.entry.path, f.entry.kind is Kind.DIR):
                yield Found(info, f.entry)
