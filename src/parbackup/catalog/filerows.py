"""A set's files: the catalog's ``files`` rows, written from the scan's columnar table
(or from entries, for streams and remote sources) and read back as ``CatalogFile``s.

A mixin of ``Catalog`` (store.py), like recordrows.py: it uses the catalog's connection,
transactions, bulk loads (``_insert``) and streamed reads (``_rows``), so it runs
unchanged on every backend.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from parbackup.catalog.schema import FILES_INSERT, one_valued
from parbackup.catalog.siderows import META_INSERT
from parbackup.entries import KINDS, Entries, one_root
from parbackup.errors import CatalogError
from parbackup.frozen import maker
from parbackup.model import FileEntry, Kind


@dataclass(frozen=True, slots=True)
class CatalogFile:
    """A file of a set, with its catalog id."""

    file_id: int
    entry: FileEntry
    state: str


_make_entry, _make_file = maker(FileEntry), maker(CatalogFile)
"""Built by slot, not through the frozen classes' ``__init__`` (parbackup/frozen.py):
one of each per file a restore reads (28.7k: about a third of the loop's time)."""
_KINDS = {k.value: k for k in Kind}
"""Each kind by its catalog value (a dict lookup: ``Kind(value)`` costs 10 times more)."""
_KIND_NAMES = [str(k) for k in KINDS]


def _entry_columns(e: Entries, rows: range) -> dict[str, Sequence | Iterable]:
    """``add_entries``' columns (entries ``rows``, a range with a positive step) without
    the set id: array slices and ``map``s, no Python per row (1M files: 0.2-0.3 us a row
    less than tuples made in a loop). The kind is its number (``_KIND_NAMES`` names it)."""
    if rows.step < 1:
        raise ValueError("entries are recorded in ascending order")
    a, step = rows.start, rows.step
    b = max(a, min(rows.stop, len(e)))  # rows past the table's end: none
    rows = range(a, b, step)
    blob, at, roots, links = e.blobs()
    tails = [blob[x:y] for x, y in zip(at[a:b:step], at[a + 1 : b + 1 : step], strict=True)]
    sources = e.source[a:b:step]
    root = one_root(sources, roots)  # one source (most batches): no root looked up a row
    return {
        "file_id": rows,
        "path": map(bytes.__add__, map(roots.get, sources, repeat(b"")), tails)
        if root is None
        else map(root.__add__, tails),
        "kind": e.kind[a:b:step],
        "size": e.size[a:b:step],
        "mode": e.mode[a:b:step],
        "uid": e.uid[a:b:step],
        "gid": e.gid[a:b:step],
        "mtime_ns": e.mtime_ns[a:b:step],
        "link": list(map(links.get, rows, repeat(b""))) if links else [b""] * len(rows),
        "ctime_ns": e.ctime_ns[a:b:step],
        "ino": e.ino[a:b:step],
    }


def _enc(path: str) -> bytes:
    return os.fsencode(path)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _dec(raw: bytes | str) -> str:
    """A path or link from the catalog; a damaged or crafted value is a CatalogError."""
    if type(raw) is bytes:  # what SQLite gives: os.fsdecode's work without its checks
        return raw.decode(_FS_ENCODING, _FS_ERRORS) if raw else ""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise CatalogError(f"damaged catalog: a path is stored as {type(raw).__name__}")
    return os.fsdecode(bytes(raw))


class FileRows:
    """The set's files (mixed into Catalog)."""

    db: Any
    path: str
    transaction: Any
    _insert: Any
    _rows: Any
    file_metas: Any

    def add_files(self, set_id: str, entries: Iterable[tuple[int, FileEntry]]) -> None:
        """Record the files of a set (id, entry)."""
        entries = list(entries)
        with self.transaction():
            self._insert(
                FILES_INSERT,
                12,
                (
                    (
                        set_id,
                        fid,
                        _enc(e.path),
                        str(e.kind),
                        e.size,
                        e.mode,
                        e.uid,
                        e.gid,
                        e.mtime_ns,
                        _enc(e.link),
                        e.ctime_ns,
                        e.ino,
                    )
                    for fid, e in entries
                ),
            )
            metas = [(set_id, fid, e.meta) for fid, e in entries if e.meta]
            self._insert(META_INSERT, 3, metas)

    def add_entries(self, set_id: str, entries: Entries, rows: range | None = None) -> None:
        """Record entries of a columnar scan table (``rows``, default all) as the set's
        files; a file's id is its row."""
        e = entries
        rows = range(len(e)) if rows is None else rows
        columns = _entry_columns(e, rows)  # the set id and one-valued columns (kind, mode,
        fixed = {"set_id": set_id}  # owner, empty link): literals of the statement
        with self.transaction():
            self._insert(*one_valued("files", fixed, columns, {"kind": _KIND_NAMES}))
            if e.has_meta():
                metas = ((set_id, i, m) for i in rows if (m := e.meta_bytes(i)))
                self._insert(META_INSERT, 3, metas)

    def mark_files(self, set_id: str, file_ids: Iterable[int], state: str) -> None:
        """Set the state of files ('skipped' files are not restored)."""
        with self.transaction():
            self.db.executemany(
                "UPDATE files SET state=? WHERE set_id=? AND file_id=?",
                ((state, set_id, fid) for fid in file_ids),
            )

    def set_file_size(self, set_id: str, file_id: int, size: int) -> None:
        """Record a file's size once it is known (a stream's, at its end)."""
        with self.transaction():
            self.db.execute(
                "UPDATE files SET size=? WHERE set_id=? AND file_id=?", (size, set_id, file_id)
            )

    def files(self, set_id: str) -> Iterator[CatalogFile]:
        """The files of a set in id order (with their extended attributes)."""
        metas = self.file_metas(set_id)
        cur = self._rows(
            "SELECT file_id, path, kind, size, mode, uid, gid, mtime_ns, link, state,"
            " ctime_ns, ino FROM files WHERE set_id=? ORDER BY file_id",
            (set_id,),
        )
        kinds, dec, entry, made = _KINDS.get, _dec, _make_entry, _make_file  # locals: a
        enc, errors = _FS_ENCODING, _FS_ERRORS  # set's rows are many
        meta = metas.get if metas else None
        for r in cur:
            kind = kinds(r[2])
            if kind is None:
                raise CatalogError(f"{self.path} is damaged: unknown kind {r[2]!r}")
            path, link = r[1], r[8]
            yield made(
                r[0],
                entry(  # by position: path, kind, size, mode, mtime_ns, uid, gid, link,
                    path.decode(enc, errors) if type(path) is bytes else dec(path),  # source,
                    kind,  # ctime_ns, ino, read_from, meta
                    r[3],
                    r[4],
                    r[7],
                    r[5],
                    r[6],
                    "" if link == b"" else dec(link),
                    "",
                    r[10],
                    r[11],
                    "",
                    b"" if meta is None else meta(r[0], b""),
                ),
                r[9],
            )
