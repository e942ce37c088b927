"""What a restore makes after every file's data is in place: hard links and special
files, then symlinks, then each directory's mode, owner and times (deepest first, so
that making its entries changes no restored time). Nothing is written through a
symlink below the target (readback/beneath.py)."""

from __future__ import annotations

import errno
import os

from parbackup.catalog import CatalogFile
from parbackup.model import FileEntry, Kind
from parbackup.progress import EventSink, FileDone
from parbackup.readback.beneath import Beneath
from parbackup.readback.options import RestoreReport
from parbackup.readback.partfile import set_metadata
from parbackup.readback.specials import SPECIAL, make_special


def apply_metadata(path: str | int, entry: FileEntry, *, follow: bool = True) -> bool:
    """Mode, owner (when running as root) and times; never follows a symlink. False when
    root could not give the owner (restore_extended names it)."""
    return set_metadata(path, entry.mode, entry.uid, entry.gid, entry.mtime_ns, follow=follow)


def _link_metadata(dir_fd: int, name: str, entry: FileEntry) -> bool:
    """Owner (as root) and times of the symlink ``name`` itself, in ``dir_fd``; False
    when root could not give the owner (restore_extended names it)."""
    owned = True
    if os.geteuid() == 0:
        try:
            os.chown(name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
            owned = False
    ns = (entry.mtime_ns, entry.mtime_ns)
    os.utime(name, ns=ns, dir_fd=dir_fd, follow_symlinks=False)
    return owned


def restore_links(
    chosen: list[CatalogFile],
    dest: dict[int, str],
    restored: dict[str, str],
    report: RestoreReport,
    on_event: EventSink,
    unowned: set[int],
    safe: Beneath,
) -> None:
    """Hard links and special files, then symlinks, then directory metadata (deepest
    first), after all file data is in place; no symlink below the target is followed."""
    for f in chosen:
        if f.entry.kind in SPECIAL and f.file_id in dest:
            problem, error = make_special(dest[f.file_id], f.entry, restored, safe)
            if problem:
                where = report.damaged if problem == "damaged" else report.skipped
                where.append({"path": f.entry.path, "device": "", "error": error})
            else:
                report.files += 1
                on_event(FileDone(f.entry.path))
    for f in chosen:
        if f.entry.kind is Kind.SYMLINK and f.file_id in dest:
            path = dest[f.file_id]
            if safe.is_real_dir(path):
                report.damage(f.entry.path, "", "a directory is in the way")
                continue
            try:
                safe.symlink(f.entry.link, path)
                with safe.parent(path) as (fd, name):
                    if not _link_metadata(fd, name, f.entry):
                        unowned.add(f.file_id)
            except OSError as exc:
                report.damage(f.entry.path, "", f"{path}: {exc.strerror or exc}")
                continue
            report.files += 1
            on_event(FileDone(f.entry.path))
    folders = [f for f in chosen if f.entry.kind is Kind.DIR and f.file_id in dest]
    parents: dict[str, int] = {}  # held open for their next subdirectories
    try:
        for f in sorted(folders, key=lambda f: -f.entry.path.count("/")):
            try:  # never chmod through a symlink: only a real directory opens here
                fd = _open_dir(dest[f.file_id], parents, safe)
            except OSError:  # a symlink, or no access (not even root's)
                continue
            try:
                if not apply_metadata(fd, f.entry):
                    unowned.add(f.file_id)
            except OSError as exc:  # the target turned read-only, a quota...
                report.damage(f.entry.path, "", f"{dest[f.file_id]}: {exc.strerror or exc}")
                continue
            finally:
                os.close(fd)
            report.files += 1
    finally:
        for held in parents.values():
            os.close(held)


_KEEP_PARENTS = 64
"""Parents kept open while directories get their metadata: deepest first, and within a
depth in the catalog's order (a tree walk), so siblings come one after another."""


def _open_dir(path: str, parents: dict[str, int], safe: Beneath) -> int:
    """The directory ``path`` opened for its metadata, never through a symlink: relative
    to its parent, opened beneath the target once (``parents``, the last used last) and
    kept for its next subdirectories; the target itself opened as it is."""
    if path == safe.root:
        return safe.open(path, os.O_RDONLY | os.O_DIRECTORY)
    parent, name = os.path.split(path)
    pfd = parents.pop(parent, None)
    if pfd is None:
        pfd = safe.open(parent, _PARENT_FLAGS)
        while len(parents) >= _KEEP_PARENTS:
            os.close(parents.pop(next(iter(parents))))
    parents[parent] = pfd
    return os.open(name, _DIR_OPEN, dir_fd=pfd)


_PARENT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
