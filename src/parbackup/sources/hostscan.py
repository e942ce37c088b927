"""Scanning a tree on its own cluster host as parallel subtree tasks (docs/CLUSTER.md).

``top_level`` lists the root's children there; ``scan_names`` (one task per group of
top-level directories, one for the root and its other entries) scans each child with
``LocalTree`` and returns compact columnar pieces (``Piece``: an ``Entries`` table, the
problems met, the files with several names); ``merge`` joins them on the controller in
the order a local scan gives (root, the root's children by name, then each top-level
directory's tree in turn), and rejoins hard links whose names lie in different pieces:
the first name in that order stays a file, the later ones become hard links to it, as a
scan of the whole tree makes them. A tree with a selection (excludes, one file system)
is scanned whole in one task, so the rules apply from its root as they do here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace

from parbackup import xattrs
from parbackup.entries import DIR, FILE, HARDLINK, Entries
from parbackup.selection import Excluded
from parbackup.sources.base import ErrorFunc, SourceSpec
from parbackup.sources.local import LocalTree

ROOT = ""
"""The name of the root's own piece in ``scan_names``."""


@dataclass
class Piece:
    """One scanned child of the root (or the root itself, or a whole tree)."""

    entries: Entries
    skipped: list[tuple[str, str]] = field(default_factory=list)
    linked: set[tuple[int, int]] = field(default_factory=set)
    excluded: Excluded = field(default_factory=Excluded)


def local_spec(spec: SourceSpec, path: str = "") -> SourceSpec:
    """The spec of ``path`` (default: the root) as a plain local tree on its host."""
    path = path or spec.record_root
    return replace(spec, name=path, record_root=path, host="", via="")


def top_level(spec: SourceSpec) -> list[tuple[str, bool]] | None:
    """The root's children as (name, is a directory), by name; None: scan it whole."""
    if spec.select:
        return None
    try:
        if not stat.S_ISDIR(os.lstat(spec.record_root).st_mode):
            return None
        with os.scandir(spec.record_root) as it:
            return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except OSError:
        return None  # the whole scan reports it


def scan_whole(spec: SourceSpec) -> Piece:
    """The whole tree in one piece (a selection applies from its root)."""
    piece = Piece(Entries())
    tree = LocalTree(local_spec(spec))
    tree.scan(piece.entries, 0, lambda p, e: piece.skipped.append((p, e)))
    piece.linked = set(tree.first_names)
    piece.excluded = tree.excluded
    return piece


def scan_names(spec: SourceSpec, names: list[str]) -> list[Piece]:
    """A piece for each child ``names`` of the root (``ROOT``: the root's own entry)."""
    pieces = []
    for name in names:
        if name == ROOT:
            pieces.append(_root_piece(spec))
            continue
        piece = Piece(Entries())
        tree = LocalTree(local_spec(spec, os.path.join(spec.record_root, name)))
        tree.scan(piece.entries, 0, lambda p, e, piece=piece: piece.skipped.append((p, e)))
        piece.linked = set(tree.first_names)
        pieces.append(piece)
    return pieces


def _root_piece(spec: SourceSpec) -> Piece:
    """The root directory's own entry (its children come in their own pieces)."""
    piece = Piece(Entries())
    root = os.fsencode(spec.record_root)
    piece.entries.set_root(0, root)
    try:
        st = os.lstat(root)
    except OSError as exc:
        piece.skipped.append((spec.display or spec.record_root, exc.strerror or str(exc)))
        return piece
    piece.entries.append(b"", DIR, 0, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                         st.st_ctime_ns, st.st_ino, st.st_dev)  # fmt: skip
    payload, why = xattrs.read(root, None) if spec.xattrs else (b"", "")
    if why:
        piece.skipped.append((spec.record_root, why))
    piece.entries.set_meta(0, payload)
    return piece


def groups(children: list[tuple[str, bool]], tasks: int) -> list[list[str]]:
    """The scan tasks: the root with its other entries first, then the top-level
    directories in order, cut into at most ``tasks`` runs of neighbours."""
    dirs = [name for name, is_dir in children if is_dir]
    first = [ROOT, *(name for name, is_dir in children if not is_dir)]
    size = max(1, -(-len(dirs) // max(1, tasks)))
    return [first, *(dirs[i : i + size] for i in range(0, len(dirs), size))]


def merge(
    spec: SourceSpec,
    out: Entries,
    index: int,
    children: list[tuple[str, bool]] | None,
    pieces: dict[str, Piece],
    on_error: ErrorFunc,
) -> Excluded:
    """Append the pieces to ``out`` as source ``index``, in a local scan's order (module
    docstring); their problems go to ``on_error``; what a selection left out, returned."""
    root = os.fsencode(spec.record_root)
    out.set_root(index, root)
    excluded = Excluded()
    firsts: dict[tuple[int, int], bytes] = {}
    order = [(pieces[ROOT], 0, None)]  # the root's own entry, or the whole tree
    for name, is_dir in children or ():  # each child's own entry (a file's: all of it)
        order.append((pieces[name], 0, 1 if is_dir else None))
    for name, is_dir in children or ():  # then the top-level directories' trees
        if is_dir:
            order.append((pieces[name], 1, None))
    for piece, start, stop in order:
        _append(piece, start, stop, out, index, len(root), firsts)
    for piece in pieces.values():
        for path, why in piece.skipped:
            on_error(path, why)
        excluded.merge(piece.excluded)
    return excluded


def _append(piece, start, stop, out, index, cut, firsts) -> None:
    """Rows ``start:stop`` of a piece into ``out``, hard links rejoined across pieces."""
    e = piece.entries
    stop = len(e) if stop is None else min(stop, len(e))
    if start >= stop:
        return
    blob, at, roots, links = e.blobs()
    prefix = roots.get(0, b"")[cut:]  # a piece is one source: its root after the tree's
    paths = [prefix + blob[at[i] : at[i + 1]] for i in range(start, stop)]
    cols = [col[start:stop] for col in (e.kind, e.size, e.mode, e.uid, e.gid, e.mtime_ns,
                                        e.ctime_ns, e.ino, e.dev)]  # fmt: skip
    row_links = {i - start: link for i, link in links.items() if start <= i < stop}
    metas = {i - start: e.meta_bytes(i) for i in range(start, stop)} if e.has_meta() else {}
    if piece.linked:  # a file whose names lie in several pieces: the first one stays
        root = out.blobs()[2].get(index, b"")
        kinds, sizes, inos, devs = cols[0], cols[1], cols[7], cols[8]
        for k in range(len(paths)):
            key = (devs[k], inos[k])
            if kinds[k] in (FILE, HARDLINK) and key in piece.linked:
                full = root + paths[k]
                first = firsts.setdefault(key, full)
                if first != full:
                    kinds[k], sizes[k], row_links[k] = HARDLINK, 0, first
                    metas.pop(k, None)
    first_row = len(out)
    out.extend_columns(paths, cols, index, row_links)
    for k, payload in metas.items():
        if payload:
            out.set_meta(first_row + k, payload)
