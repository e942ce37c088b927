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
from dataclasses import dataclass
from operator import itemgetter

from parbackup.catalog import Catalog, CatalogFile
from parbackup.errors import RestoreError
from parbackup.model import Kind
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.readback.beneath import Beneath
from parbackup.readback.core import read_back, warm_up
from parbackup.readback.fidelity import restore_extended
from parbackup.readback.links import restore_links
from parbackup.readback.mark import MARK, RestoreMark
from parbackup.readback.messages import PackedRef
from parbackup.readback.options import RestoreOptions, RestoreReport
from parbackup.readback.partfile import part_name, part_tag
from parbackup.readback.parts import drop_parts, finish_files, prepare_parts
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
from parbackup.readback.sinks import DirectorySinkSpec, FileTarget


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
        drop_parts(files, dest, Beneath(target), tag)
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

    job = _Job(catalog, info.id, dest, options, report, on_event, set(), selection.idents, tag)
    restored = _restore_files(job, files, records, dirs=dirs, meanwhile=make_dirs)
    if report.damaged and catalog.parity(info.id):
        restored |= _retry_with_parity(job, files, records)
    unowned = job.unowned
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


@dataclass
class _Job:
    """What every pass over the files of one restore shares (the first, and the retry
    of the damaged ones with parity)."""

    catalog: Catalog
    set_id: str
    dest: dict[int, str]
    """Where each file goes (by file id); the files without one are not restored."""
    options: RestoreOptions
    report: RestoreReport
    on_event: EventSink
    unowned: set[int]
    """The ids of files restored whose owner could not be given (added to)."""
    idents: dict[int, int] | None
    """readback/select.py ``identities``: checked against the record headers."""
    tag: str
    """What the ``.part`` names carry (readback/partfile.py ``part_tag``)."""


def _retry_with_parity(
    job: _Job, files: list[CatalogFile], records: dict[str, list[PackedRef]]
) -> dict[str, str]:
    """Files found damaged in a parity set are read again once, from copies of their
    devices' columns rebuilt from the row digests and parity (readback/recover.py)."""
    report = job.report
    bad = {d["path"] for d in report.damaged}
    again = [f for f in files if f.entry.path in bad and f.file_id in job.dest]
    if not again:
        return {}
    ids = {f.file_id for f in again}
    subset = {label: [rec for rec in recs if rec[0] in ids] for label, recs in records.items()}
    subset = {label: recs for label, recs in subset.items() if recs}
    report.damaged = [d for d in report.damaged if d["path"] not in {f.entry.path for f in again}]
    return _restore_files(job, again, subset, suspects=sorted(subset))


def _restore_files(
    job: _Job,
    files: list[CatalogFile],
    records: dict[str, list[PackedRef]],
    suspects: Sequence[str] = (),
    dirs: DirMaker | None = None,
    meanwhile: Callable[[], None] = lambda: None,
) -> dict[str, str]:
    """Read and write every regular file of ``files`` (``records``: theirs, by device
    label); original path -> restored path of the good. ``suspects``: the labels whose
    columns are rebuilt from parity first (readback/recover.py).

    The readers start first; ``meanwhile()``, then the ``.part`` files this process
    finishes and the empty files (made with their directories by ``dirs``), are done
    while they read.
    """
    dest, options, report, on_event, tag = job.dest, job.options, job.report, job.on_event, job.tag
    unowned = job.unowned
    one, on, spans, several = index_records(records)
    labels: dict[int, Collection[str]] = {}  # the devices holding each file's records
    active: list[CatalogFile] = []
    paths: dict[int, str] = {}
    unread: set[int] = set()
    split: set[int] = set()  # split over devices or not covered: finished here
    whole: set[int] = set()  # the others, finished by their reader
    targets: dict[str, dict[int, FileTarget]] = {label: {} for label in records}
    split_files: list[CatalogFile] = []  # in the order of ``files``, as ``split``
    empty_files: list[CatalogFile] = []  # no records: made and finished by prepare_parts
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
                early.update(prepare_parts(picked, dest, unowned, safe, dirs, tag, split=split_now))

        def done(fids: list[int]) -> None:
            """The readers' good files: those they finished are announced (a set's files
            are many: names bound once a batch)."""
            event, path, mine = FileDone, paths.__getitem__, whole
            for fid in fids:
                if fid in mine:
                    on_event(event(path(fid)))

        catalog, set_id = job.catalog, job.set_id
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
                idents=job.idents,
                packed=True,
            )
        report.rebuilt = sorted(set(report.rebuilt) | set(rescue.missing))
        unowned |= outcome.unowned
        return finish_files(
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
