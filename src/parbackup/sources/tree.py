"""Walking local directory trees into FileEntry lists.

A path that cannot be read is handed to ``on_error`` and skipped; it never ends the run.
Entries come out sorted by path within each source, so the same tree always gives the
same list (and the same plan).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

from parbackup.errors import SourceError
from parbackup.model import FileEntry, Kind
from parbackup.sources.blockdev import image_entry, is_block_device
from parbackup.sources.remote import check_remote, is_remote, walk_remote
from parbackup.sources.special import HardLinks, special_kind

ErrorFunc = Callable[[str, str], None]


def check_sources(sources: Sequence[str]) -> list[str]:
    """Absolute forms of the sources; SourceError if any is missing (before any write)."""
    out: list[str] = []
    for src in sources:
        if is_remote(src):
            if src not in out:
                out.append(check_remote(src))
            continue
        path = os.path.abspath(src)
        if not os.path.lexists(path):
            raise SourceError(f"source does not exist: {src}")
        if path not in out:
            out.append(path)
    return out


def _entry(path: str, st: os.stat_result, source: str) -> FileEntry | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        kind, size, link = Kind.FILE, st.st_size, ""
    elif stat.S_ISDIR(mode):
        kind, size, link = Kind.DIR, 0, ""
    elif stat.S_ISLNK(mode):
        kind, size, link = Kind.SYMLINK, 0, os.readlink(path)
    else:
        special = special_kind(st)
        if special is None:
            return None
        (kind, link), size = special, 0
    return FileEntry(
        path=path,
        kind=kind,
        size=size,
        mode=mode,
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        link=link,
        source=source,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
    )


def walk(source: str, on_error: ErrorFunc) -> Iterator[FileEntry]:
    """Entries of one source tree (the root itself first), depth first, sorted by name.

    A source that is a block device, or a symlink to one, is one image entry (F2); a URL
    is a remote tree (sources/remote.py).
    """
    if is_remote(source):
        yield from walk_remote(source, on_error)
        return
    if is_block_device(source):
        try:
            yield image_entry(source, source)
        except (OSError, SourceError) as exc:
            on_error(source, str(exc))
        return
    try:
        st = os.lstat(source)
        root = _entry(source, st, source)
    except OSError as exc:
        on_error(source, exc.strerror or str(exc))
        return
    if root is None:
        on_error(source, "not a regular file, directory or symlink")
        return
    yield root
    if root.kind is not Kind.DIR:
        return
    stack = [source]
    links = HardLinks()
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            on_error(directory, exc.strerror or str(exc))
            continue
        subdirs = []
        for child in children:
            try:
                st = child.stat(follow_symlinks=False)
                entry = _entry(child.path, st, source)
            except OSError as exc:
                on_error(child.path, exc.strerror or str(exc))
                continue
            if entry is None:
                on_error(child.path, "unknown file type, not backed up")
                continue
            entry = links.resolve(entry, st)
            yield entry
            if entry.kind is Kind.DIR:
                subdirs.append(child.path)
        stack.extend(reversed(subdirs))


def relocate(entry: FileEntry, read_root: str, source: str) -> FileEntry:
    """An entry found under ``read_root`` (a snapshot) as if found under ``source``."""
    live = source + entry.path[len(read_root) :]
    if entry.kind is Kind.HARDLINK:  # its first name was found under the snapshot too
        entry = replace(entry, link=source + entry.link[len(read_root) :])
    return replace(entry, path=live, source=source, read_from=entry.read_path)


def scan(
    sources: Sequence[str], on_error: ErrorFunc, read_roots: Mapping[str, str] | None = None
) -> list[FileEntry]:
    """Every entry of every source, each path once.

    ``read_roots`` maps a source (absolute) to where its tree is read instead, such as a
    snapshot of it; entries keep the live paths and remember where to read (F4).
    """
    seen: set[str] = set()
    out: list[FileEntry] = []
    roots = read_roots or {}
    for source in check_sources(sources):
        root = roots.get(source, source)
        for entry in walk(root, on_error):
            if root != source:
                entry = relocate(entry, root, source)
            if entry.path not in seen:
                seen.add(entry.path)
                out.append(entry)
    return out
