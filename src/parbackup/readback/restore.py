"""Restoring a set (or the paths matching globs) into a target directory.

All devices are read at once, one reader process each (readback/core.py). Every record
is checked (header against the catalog, payload against its checksum) and written at its
offset into a hidden temporary ``.part`` file next to its destination. Only a file whose
every byte arrived intact is renamed into place and given its mode, owner and times; a
damaged or incomplete file is removed and reported, never handed back as good. A file
whose records all lie on one device is finished by that device's reader, so per-file
work spreads over the processes. The readers start as soon as their work is known: each
makes its files' missing directories (beneath the target), while this process makes
the other directories, the ``.part`` of the files split over devices and the empty
files. This process finishes the split files, then
makes hard links and special files, then symlinks, and gives directories their metadata
last (deepest first), and extended attributes (ACLs, capabilities) to everything at the
very end (readback/fidelity.py). Nothing is written through a symlink. An interrupted
restore (Ctrl-C, SIGTERM) kills its readers and leaves no ``.part`` file behind; one
killed outright leaves its mark in the target, so running it again finishes the job
without ``--overwrite`` (readback/mark.py).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter

from parbackup.catalog import Catalog, CatalogFile
from parbackup.errors import RestoreError
from parbackup.model import FileEntry, Kind
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.readback.beneath import Beneath
from parbackup.readback.core import Outcome, read_back, warm_up
from parbackup.readback.fidelity import restore_extended
from parbackup.readback.links import apply_metadata, restore_links
from parbackup.readback.mark import MARK, RestoreMark
from parbackup.readback.messages import PackedRef
from parbackup.readback.options import RestoreOptions, RestoreReport
from parbackup.readback.paths import DirMaker, target_path
from parbackup.readback.recover import recovered
from parbackup.readback.select import (
    SHARED_PATH,
    covered_spans,
    index_records,
    lost_rows,
    packed_by_label,
    restorable_set,
    select_for_restore,
    shared_paths,
    unlisted,
)
from parbackup.readback.sinks import (
    DirectorySinkSpec,
    FileTarget,
    open_part,
    part_name,
    part_tag,
)


def _is_empty_dir(path: str) -> bool:
    """True when ``path`` is missing or holds nothing but a restore's mark: nothing there
    can clash."""
    try:
        with os.scandir(path) as it:
            return next((e for e in it if e.name != MARK), None) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False


def run_restore(
    catalog: Catalog, options: RestoreOptions, on_event: EventSink = ignore
) -> RestoreReport:
    """Restore a set into ``options.target``; see the module docstring."""
    collecting = gc.isenabled()
    gc.disable()  # a set's files and records make few cycles: collections would walk
    try:  # them over and over (a fifth of this process's time with 67k files)
        with contextlib.ExitStack() as cleanup:  # the target's mark is let go on any exit
            return _run_restore(catalog, options, on_event, cleanup)
    finally:
        if collecting:
            gc.enable()


def _run_restore(
    catalog: Catalog, options: RestoreOptions, on_event: EventSink, cleanup: contextlib.ExitStack
) -> RestoreReport:
    started = time.monotonic()
    warm_up()
    info = restorable_set(catalog, options.set_ref)
    target = os.path.abspath(options.target)
    report = RestoreReport(set_id=info.id, target=target)
    selection = select_for_restore(catalog, info.id, options.includes)
    report.skipped = [
        {"path": path, "device": "", "error": why} for path, why in selection.left_out
    ]
    wanted = options.includes
    if wanted and not report.skipped and not selection.matched:
        raise RestoreError("no file in the set matches " + ", ".join(wanted))
    report.skipped += unlisted(info)
    report.damaged += lost_rows(info, selection.rows)
    chosen = selection.chosen
    dest: dict[int, str] = {}
    for f in chosen:
        try:
            dest[f.file_id] = target_path(target, f.entry.path)
        except RestoreError as exc:
            report.damage(f.entry.path, "", str(exc))
    twice = shared_paths(f.entry.path for f in chosen)
    for path in sorted(twice):
        report.damage(path, "", SHARED_PATH)
    chosen = [f for f in chosen if f.file_id in dest and f.entry.path not in twice]
    report.grown = [
        {"path": f.entry.path, "note": "grew while it was backed up: restored as it was read"}
        for f in chosen
        if f.state == "grown"
    ]
    mark = cleanup.enter_context(RestoreMark.take(target, info.id, options.includes))
    if not options.overwrite and not mark.resumes and not _is_empty_dir(target):
        clashes = [
            dest[f.file_id]
            for f in chosen
            if f.entry.kind is not Kind.DIR and os.path.lexists(dest[f.file_id])
        ]
        if clashes:
            shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
            raise RestoreError(
                f"{len(clashes)} file(s) already exist in the target (use --overwrite): {shown}"
            )
    mark.claim(info.id, options.includes)
    files = [f for f in chosen if f.entry.kind is Kind.FILE]
    records = packed_by_label(catalog, info.id, {f.file_id for f in files})
    on_event(
        Started("restore", len(chosen), sum(f.entry.size for f in files), tuple(sorted(records)))
    )
    os.makedirs(target, exist_ok=True)
    tag = part_tag(  # only a name starting so can clash: the rest are not looked at one by one
        os.path.basename(f.entry.path) for f in chosen if "/.parbackup-" in f.entry.path
    )
    if mark.resumes:  # what the killed run left half written
        _drop_parts(files, dest, Beneath(target), tag)
    dirs = DirMaker(target)
    cleanup.callback(dirs.close)

    def make_dirs() -> None:
        """Every directory but those of the regular files (their readers make them),
        made while the readers read."""
        for f in chosen:
            if f.entry.kind is not Kind.FILE:
                path = dest[f.file_id]
                try:
                    dirs.ensure(path if f.entry.kind is Kind.DIR else os.path.dirname(path))
                except (RestoreError, OSError) as exc:
                    report.damage(f.entry.path, "", str(exc))
                    dest.pop(f.file_id)

    unowned: set[int] = set()
    idents = selection.idents
    restored = _restore_files(
        catalog, info.id, files, dest, records, options, report, on_event, unowned,
        dirs=dirs, meanwhile=make_dirs, idents=idents, tag=tag,
    )  # fmt: skip
    if report.damaged and catalog.parity(info.id):
        restored |= _retry_with_parity(
            catalog, info.id, files, dest, records, options, report, on_event, unowned, idents, tag
        )
    safe = Beneath(target)  # no symlink below the target is followed
    restore_links(chosen, dest, restored, report, on_event, unowned, safe)
    bad = {d["path"] for d in report.damaged + report.skipped}
    placed = set(restored) | {
        f.entry.path for f in chosen if f.entry.kind is not Kind.FILE and f.entry.path not in bad
    }
    report.left_out = restore_extended(chosen, dest, placed, unowned, safe)
    report.seconds = time.monotonic() - started
    mark.release(finished=not report.damaged)
    return report


_ORIGIN = itemgetter(7)  # of a PackedRef: the set whose volume holds it ('' this one)


def _drop_parts(files: list[CatalogFile], dest: dict[int, str], safe: Beneath, tag: str) -> None:
    """Remove the ``.part`` of every file about to be restored, where a killed run of the
    same restore left one."""
    for f in files:
        if f.file_id in dest:
            with contextlib.suppress(OSError):
                safe.unlink(part_name(dest[f.file_id], f.file_id, tag))


def _retry_with_parity(
    catalog: Catalog,
    set_id: str,
    files: list[CatalogFile],
    dest: dict[int, str],
    records: dict[str, list[PackedRef]],
    options: RestoreOptions,
    report: RestoreReport,
    on_event: EventSink,
    unowned: set[int],
    idents: dict[int, int] | None = None,
    tag: str = "",
) -> dict[str, str]:
    """Files found damaged in a parity set are read again once, from copies of their
    devices' columns rebuilt from the row digests and parity (readback/recover.py)."""
    bad = {d["path"] for d in report.damaged}
    again = [f for f in files if f.entry.path in bad and f.file_id in dest]
    if not again:
        return {}
    ids = {f.file_id for f in again}
    subset = {label: [rec for rec in recs if rec[0] in ids] for label, recs in records.items()}
    subset = {label: recs for label, recs in subset.items() if recs}
    suspects = sorted(subset)
    report.damaged = [d for d in report.damaged if d["path"] not in {f.entry.path for f in again}]
    return _restore_files(
        catalog,
        set_id,
        again,
        dest,
        subset,
        options,
        report,
        on_event,
        unowned,
        suspects,
        idents=idents,
        tag=tag,
    )


def _restore_files(
    catalog: Catalog,
    set_id: str,
    files: list[CatalogFile],
    dest: dict[int, str],
    records: dict[str, list[PackedRef]],
    options: RestoreOptions,
    report: RestoreReport,
    on_event: EventSink,
    unowned: set[int],
    suspects: Sequence[str] = (),
    dirs: DirMaker | None = None,
    meanwhile: Callable[[], None] = lambda: None,
    idents: dict[int, int] | None = None,
    tag: str = "",
) -> dict[str, str]:
    """Read and write every regular file; original path -> restored path of the good.
    The ids of files whose owner could not be given are added to ``unowned``; ``idents``
    (readback/select.py ``identities``) are checked against the record headers.

    The readers start first; ``meanwhile()``, then the ``.part`` files this process
    finishes and the empty files (made with their directories by ``dirs``), are done
    while they read.
    """
    one, on, spans, several = index_records(records)
    labels: dict[int, Collection[str]] = {}  # the devices holding each file's records
    active: list[CatalogFile] = []
    paths: dict[int, str] = {}
    unread: set[int] = set()
    split: set[int] = set()  # split over devices or not covered: finished here
    whole: set[int] = set()  # the others, finished by their reader
    targets: dict[str, dict[int, FileTarget]] = {label: {} for label in records}
    split_files: list[CatalogFile] = []  # in the order of ``files``, as ``split``
    empty_files: list[CatalogFile] = []  # no records: made and finished by ``_prepare``
    for f in files:  # one pass: a set's files are many
        fid, e = f.file_id, f.entry
        if fid not in dest:
            continue
        active.append(f)
        paths[fid] = e.path
        got = spans.get(fid)
        if got is not None:  # several records
            held: Collection[str] = several[fid]
            covered = covered_spans(got, e.size)
        elif (rec := one.get(fid)) is not None:  # one record: it must be all of the file
            held = (on[fid],)
            covered = rec[4] == 0 and rec[5] == e.size
        else:  # none: an empty file
            held = ()
            covered = e.size == 0
        labels[fid] = held
        if not covered:
            unread.add(fid)
            split.add(fid)
            split_files.append(f)
        elif len(held) > 1:
            split.add(fid)
            split_files.append(f)
        else:
            whole.add(fid)
            if not held:  # no records (empty): finished here, before any answer
                empty_files.append(f)
        for label in held:
            targets[label][fid] = (dest[fid], e.size, e.mode, e.uid, e.gid, e.mtime_ns,
                                   fid in whole)  # fmt: skip
    origins = set().union(*(map(_ORIGIN, recs) for recs in records.values())) - {""}
    root = os.path.abspath(options.target)
    safe = Beneath(root)  # no symlink below the target is followed
    try:
        for fid in split:  # a reader never truncates these: no older one may stay
            with contextlib.suppress(OSError):
                safe.unlink(part_name(dest[fid], fid, tag))
        work = {label: [rec for rec in recs if rec[0] in paths] for label, recs in records.items()}
        early: dict[int, str] = {}

        def prepare() -> None:
            """While the readers read: the other directories, the split files' .part,
            then the empty files (nothing of theirs is read: no reader waits for them)."""
            meanwhile()
            for picked, split_now in ((split_files, True), (empty_files, False)):
                early.update(_prepare(picked, dest, unowned, safe, dirs, tag, split=split_now))

        def done(fids: list[int]) -> None:
            """The readers' good files: those they finished are announced (a set's files
            are many: names bound once a batch)."""
            event, path, mine = FileDone, paths.__getitem__, whole
            for fid in fids:
                if fid in mine:
                    on_event(event(path(fid)))

        known = catalog.device_urls()
        local = options.executor is None  # (a cluster's readers cannot share a spool)
        with recovered(
            catalog, set_id, known, options.devices, suspects, origins, share=local
        ) as rescue:
            outcome = read_back(
                bytes.fromhex(set_id),
                work,
                known,
                tuple(rescue.urls) + tuple(options.devices),  # stand-ins win over -d
                lambda label: DirectorySinkSpec(targets[label], root, tag),
                on_event,
                on_good=done,
                meanwhile=prepare,
                codec=options.codec,
                executor=options.executor,
                idents=idents,
                packed=True,
            )
        report.rebuilt = sorted(set(report.rebuilt) | set(rescue.missing))
        unowned |= outcome.unowned
        return _finish_files(
            active,
            dest,
            labels,
            unread,
            split,
            early,
            outcome,
            report,
            on_event,
            unowned,
            safe,
            tag,
        )
    except BaseException:  # interrupted: no .part is left behind
        for f in active:
            with contextlib.suppress(OSError):
                safe.unlink(part_name(dest[f.file_id], f.file_id, tag))
        raise


def _finish_files(
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


def _prepare(
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
