"""Restoring a set (or the paths matching globs) into a target directory.

All devices are read at once, one thread each. Every record is checked (header against
the catalog, payload against its checksum) and written at its offset into a hidden
temporary file next to its destination. Only a file whose every byte arrived intact is
renamed into place and given its mode, owner and times; a damaged or incomplete file is
removed and reported, never handed back as good. Symlinks are made after all file data is
written, directories get their metadata last (deepest first), and nothing is written
through a symlink.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from parbackup.catalog import Catalog, CatalogFile
from parbackup.engine.paths import DirMaker, is_real_dir, target_path
from parbackup.engine.reader import read_set
from parbackup.engine.specials import SPECIAL, make_special, substitute_hardlinks
from parbackup.errors import CatalogError, RestoreError
from parbackup.model import FileEntry, Kind, RecordRef
from parbackup.progress import EventSink, FileDone, Started, ignore
from parbackup.selection import matches as selected


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore, and where."""

    target: str
    set_ref: str | None = None
    includes: tuple[str, ...] = ()
    overwrite: bool = False
    devices: tuple[str, ...] = ()


@dataclass
class RestoreReport:
    """The outcome of a restore; ``to_json`` gives the ``restore --json`` document."""

    set_id: str
    target: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    damaged: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    """Entries not recreated because this user may not (device nodes without privilege)."""

    @property
    def status(self) -> str:
        return "damaged" if self.damaged else "ok"

    @property
    def exit_code(self) -> int:
        return 1 if self.damaged else 3 if self.skipped else 0

    def to_json(self) -> dict:
        return {
            "set": self.set_id,
            "status": self.status,
            "target": self.target,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "damaged": self.damaged,
            **({"skipped": self.skipped} if self.skipped else {}),
        }


def matches(path: str, globs: Sequence[str]) -> bool:
    """True when ``path`` or one of its parent directories matches one of the globs."""
    if not globs:
        return True
    probe = path
    while True:
        if any(fnmatch.fnmatchcase(probe, g) for g in globs):
            return True
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent


def select_files(catalog: Catalog, set_id: str, globs: Sequence[str]) -> list[CatalogFile]:
    """The restorable files of a set that match the globs."""
    return [f for f in catalog.files(set_id) if f.state == "ok" and selected(f.entry.path, globs)]


def records_by_label(
    catalog: Catalog, set_id: str, file_ids: set[int]
) -> dict[str, list[tuple[int, RecordRef]]]:
    """The payload-carrying records of the chosen files, grouped by device label."""
    out: dict[str, list[tuple[int, RecordRef]]] = {}
    for fid, ref in catalog.records(set_id):
        if fid in file_ids and ref.size:
            out.setdefault(ref.label, []).append((fid, ref))
    return out


_ZEROS = bytes(1 << 20)


def is_zero(payload: memoryview) -> bool:
    """True when every byte of ``payload`` is zero (restored as a hole, F2)."""
    step = len(_ZEROS)
    return all(
        payload[at : at + step] == _ZEROS[: len(payload[at : at + step])]
        for at in range(0, len(payload), step)
    )


_BLOCK = 4096
_ZERO_BLOCK = bytes(_BLOCK)


def write_sparse(fd: int, payload: memoryview, offset: int) -> None:
    """pwrite ``payload`` at ``offset``, skipping all-zero 4 KiB blocks (left as holes)."""
    n = len(payload)
    run = -1  # start of the current run of non-zero blocks
    at = 0
    while at < n:
        block = payload[at : at + _BLOCK]
        if block == _ZERO_BLOCK[: len(block)]:
            if run >= 0:
                os.pwrite(fd, payload[run:at], offset + run)
                run = -1
        elif run < 0:
            run = at
        at += _BLOCK
    if run >= 0:
        os.pwrite(fd, payload[run:n], offset + run)


def covered(refs: list[RecordRef], size: int) -> bool:
    """True when the records cover bytes [0, size) exactly once."""
    at = 0
    for ref in sorted(refs, key=lambda r: r.offset):
        if ref.offset != at:
            return False
        at += ref.size
    return at == size


def apply_metadata(path: str, entry: FileEntry, *, follow: bool = True) -> None:
    """Mode, owner (when running as root) and times; never follows a symlink."""
    if os.geteuid() == 0:
        os.chown(path, entry.uid, entry.gid, follow_symlinks=follow)
    if follow:
        os.chmod(path, entry.mode & 0o7777)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=follow)


def run_restore(
    catalog: Catalog, options: RestoreOptions, on_event: EventSink = ignore
) -> RestoreReport:
    """Restore a set into ``options.target``; see the module docstring."""
    started = time.monotonic()
    info = catalog.resolve_set(options.set_ref)
    if info.status not in ("complete", "degraded"):
        raise CatalogError(f"set {info.id} is {info.status}, not restorable")
    target = os.path.abspath(options.target)
    report = RestoreReport(set_id=info.id, target=target)
    chosen = select_files(catalog, info.id, options.includes)
    if options.includes and not chosen:
        raise RestoreError("no file in the set matches " + ", ".join(options.includes))
    chosen = substitute_hardlinks(chosen, select_files(catalog, info.id, ()))
    dest: dict[int, str] = {}
    for f in chosen:
        try:
            dest[f.file_id] = target_path(target, f.entry.path)
        except RestoreError as exc:
            report.damaged.append({"path": f.entry.path, "device": "", "error": str(exc)})
    chosen = [f for f in chosen if f.file_id in dest]
    if not options.overwrite:
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
    files = [f for f in chosen if f.entry.kind is Kind.FILE]
    records = records_by_label(catalog, info.id, {f.file_id for f in files})
    on_event(
        Started("restore", len(chosen), sum(f.entry.size for f in files), tuple(sorted(records)))
    )

    os.makedirs(target, exist_ok=True)
    dirs = DirMaker(target)
    for f in chosen:
        path = dest[f.file_id]
        try:
            dirs.ensure(path if f.entry.kind is Kind.DIR else os.path.dirname(path))
        except (RestoreError, OSError) as exc:
            report.damaged.append({"path": f.entry.path, "device": "", "error": str(exc)})
            dest.pop(f.file_id)
    temp: dict[int, str] = {}
    for f in files:
        if f.file_id not in dest:
            continue
        path = dest[f.file_id]
        tmp = os.path.join(os.path.dirname(path), f".parbackup-{f.file_id}.part")
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                os.ftruncate(fd, f.entry.size)
            finally:
                os.close(fd)
        except OSError as exc:
            report.damaged.append({"path": f.entry.path, "device": "", "error": str(exc)})
            continue
        temp[f.file_id] = tmp

    damage: dict[int, tuple[str, str]] = {}
    got: dict[int, list[RecordRef]] = {}
    restored: dict[str, str] = {}
    lock = threading.Lock()

    def sink(url: str, fid: int, ref: RecordRef, payload: memoryview | None, error: str) -> None:
        if payload is None or fid not in temp:
            with lock:
                damage.setdefault(fid, (url, error or "not restored"))
            return
        if not is_zero(payload):  # the file was sized with ftruncate: zeros stay holes
            fd = os.open(temp[fid], os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                write_sparse(fd, payload, ref.offset)
            finally:
                os.close(fd)
        with lock:
            got.setdefault(fid, []).append(ref)

    read_set(
        bytes.fromhex(info.id), records, catalog.device_urls(), options.devices, sink, on_event
    )

    for f in files:
        if f.file_id not in temp:
            continue
        tmp = temp[f.file_id]
        fid = f.file_id
        if fid not in damage and not covered(got.get(fid, []), f.entry.size):
            damage[fid] = ("", "records missing from the catalog")
        if fid in damage:
            os.unlink(tmp)
            device, error = damage[fid]
            report.damaged.append({"path": f.entry.path, "device": device, "error": error})
            continue
        path = dest[fid]
        apply_metadata(tmp, f.entry)
        if os.path.isdir(path) and not os.path.islink(path):
            os.unlink(tmp)
            report.damaged.append(
                {"path": f.entry.path, "device": "", "error": "a directory is in the way"}
            )
            continue
        os.replace(tmp, path)
        restored[f.entry.path] = path
        report.files += 1
        report.bytes += f.entry.size
        on_event(FileDone(f.entry.path))
    for f in chosen:
        if f.entry.kind in SPECIAL and f.file_id in dest:
            problem, error = make_special(dest[f.file_id], f.entry, restored)
            if problem:
                where = report.damaged if problem == "damaged" else report.skipped
                where.append({"path": f.entry.path, "device": "", "error": error})
            else:
                report.files += 1
                on_event(FileDone(f.entry.path))
    for f in chosen:
        if f.entry.kind is Kind.SYMLINK and f.file_id in dest:
            path = dest[f.file_id]
            if is_real_dir(path):
                report.damaged.append(
                    {"path": f.entry.path, "device": "", "error": "a directory is in the way"}
                )
                continue
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(f.entry.link, path)
            apply_metadata(path, f.entry, follow=False)
            report.files += 1
            on_event(FileDone(f.entry.path))
    for f in sorted(chosen, key=lambda f: -f.entry.path.count("/")):
        if f.entry.kind is Kind.DIR and f.file_id in dest:
            if not is_real_dir(dest[f.file_id]):  # never chmod through a symlink
                continue
            apply_metadata(dest[f.file_id], f.entry)
            report.files += 1
    report.seconds = time.monotonic() - started
    return report
