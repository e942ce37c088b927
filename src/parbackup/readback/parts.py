"""The ``.part`` files the restore controller itself makes and finishes, and its
judgement of every file once the readers are done.

Most files are written and finished by their reader (readback/sinks.py). The controller
(readback/restore.py) makes the ``.part`` of the files split over devices (sized for
their readers to fill) and the empty files (made and finished at once) while the
readers read, then judges each file by what the readers said, gives a split file its
metadata and renames it into place, and removes the ``.part`` of every file that is not
whole. Apart from restore.py so that the order of a restore reads in one place and the
per-file making and finishing in another; it imports nothing of restore.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

from parbackup.catalog import CatalogFile
from parbackup.errors import RestoreError
from parbackup.model import FileEntry
from parbackup.progress import EventSink, FileDone
from parbackup.readback.beneath import Beneath
from parbackup.readback.core import Outcome
from parbackup.readback.links import apply_metadata
from parbackup.readback.options import RestoreReport
from parbackup.readback.partfile import open_part, part_name
from parbackup.readback.paths import DirMaker


def drop_parts(files: list[CatalogFile], dest: dict[int, str], safe: Beneath, tag: str) -> None:
    """Remove the ``.part`` of every file about to be restored, where a killed run of the
    same restore left one."""
    for f in files:
        if f.file_id in dest:
            with contextlib.suppress(OSError):
                safe.unlink(part_name(dest[f.file_id], f.file_id, tag))


def finish_files(
    active: list[CatalogFile],
    dest: dict[int, str],
    labels: dict[int, Collection[str]],
    unread: set[int],
    split: set[int],
    early: dict[int, str],
    outcome: Outcome,
    report: RestoreReport,
    on_event: EventSink,
    unowned: set[int],
    safe: Beneath,
    tag: str,
) -> dict[str, str]:
    """Judge every file by what its readers said (or by ``early``: files done before the
    readers started, '' or why not); finish those this process finishes (split over
    devices); remove the ``.part`` of the rest."""
    restored: dict[str, str] = {}
    damaged, good = outcome.damaged, outcome.good
    files = nbytes = 0  # counted here, added to the report once (a set's files are many)
    for f in active:
        fid, entry = f.file_id, f.entry
        path = dest[fid]
        if fid in early:
            device, error = "", early[fid]
        elif fid in damaged:  # the first device and error reported (Outcome.ok)
            device, error = damaged[fid]
            if not error:
                error = "records missing from the catalog" if fid in unread else "not restored"
        elif fid in unread:
            device, error = "", "records missing from the catalog"
        elif good[fid] < len(labels.get(fid, ())):  # not every device holding it said so
            device, error = "", "not restored"
        elif fid in split:
            device, error = "", _finish(fid, entry, path, unowned, safe, tag)
        else:
            device, error = "", ""
        if error:
            with contextlib.suppress(OSError):
                safe.unlink(part_name(path, fid, tag))
            report.damage(entry.path, device, error)
            continue
        restored[entry.path] = path
        files += 1
        nbytes += entry.size
        if fid in split or fid in early:  # the readers announced the others
            on_event(FileDone(entry.path))
    report.files += files
    report.bytes += nbytes
    return restored


def prepare_parts(
    files: list[CatalogFile],
    dest: dict[int, str],
    unowned: set[int],
    safe: Beneath,
    dirs: DirMaker | None,
    tag: str,
    *,
    split: bool,
) -> dict[int, str]:
    """Create the ``.part`` of each of ``files`` (and its directory, with ``dirs``): with
    ``split``, files split over devices (or not covered by their records), sized for the
    readers to fill (one of them may have made it first: it is never truncated); else
    files without records (empty files), finished at once. The caller picks them in its
    one pass over a set's files (not every file looked at here again). Returns the files
    done here already: id -> '' or why not."""
    early: dict[int, str] = {}
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    now = not split  # no records: finished right here
    for f in files:
        fid = f.file_id
        tmp = part_name(dest[fid], fid, tag)
        directory, leaf = os.path.split(tmp)
        try:  # one lookup of the directory for the whole file (none if ``dirs`` has it)
            if dirs is not None:  # the maker's descriptor: not closed here
                done = _part_in(dirs.opened(directory), leaf, f, flags, dest[fid], now, unowned)
            else:
                with safe.parent(tmp) as (dfd, _name):
                    done = _part_in(dfd, leaf, f, flags, dest[fid], now, unowned)
            if now:
                early[fid] = done
        except RestoreError as exc:
            early[fid] = str(exc)
        except OSError as exc:
            early[fid] = f"{tmp}: {exc.strerror or exc}"
    return early


def _part_in(
    dfd: int, leaf: str, f: CatalogFile, flags: int, path: str, now: bool, unowned: set[int]
) -> str:
    """Make ``f``'s ``.part`` named ``leaf`` in the directory ``dfd`` (opened beneath the
    target), sized; with ``now``, also give it its metadata and rename it to ``path``'s
    name: '' or an error (OSError from making it)."""
    fd = open_part(leaf, flags, dfd, new=now)
    try:
        if f.entry.size:
            os.ftruncate(fd, f.entry.size)
        if now and not apply_metadata(fd, f.entry):
            unowned.add(f.file_id)
    finally:
        os.close(fd)
    return _rename(dfd, leaf, path) if now else ""


def _rename(dfd: int, leaf: str, path: str) -> str:
    """Rename the finished ``.part`` named ``leaf`` in the directory ``dfd`` (opened
    beneath the target) to ``path``'s name there; '' or an error."""
    try:
        os.replace(leaf, os.path.basename(path), src_dir_fd=dfd, dst_dir_fd=dfd)
    except IsADirectoryError:  # rename(2) will not replace a directory by a file
        return "a directory is in the way"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return ""


def _finish(
    fid: int, entry: FileEntry, path: str, unowned: set[int], safe: Beneath, tag: str
) -> str:
    """Give a complete ``.part`` its metadata and rename it into place; '' or an error."""
    tmp = part_name(path, fid, tag)
    leaf = os.path.basename(tmp)
    try:
        with safe.parent(tmp) as (dfd, _name):
            fd = open_part(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dfd, new=False)
            try:  # through the descriptor: the name is not looked up again
                if not apply_metadata(fd, entry):
                    unowned.add(fid)
            finally:
                os.close(fd)
            return _rename(dfd, leaf, path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
