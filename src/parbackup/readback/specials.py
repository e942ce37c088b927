"""Restoring hard links, FIFOs, sockets and device nodes (see sources/special.py).

Hard links are made after every file's data is in place, to the restored first name.
A hard link whose first name is not part of the restore (``--include``) is restored as a
file with that name's data instead, so selecting one name of a file always gives its
bytes. Nodes are created fresh (never opened); a device node needs privilege
(CAP_MKNOD): where it is refused the node is reported as skipped, not as damage.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from parbackup.catalog import CatalogFile
from parbackup.model import Kind
from parbackup.readback.paths import is_real_dir

SPECIAL = (Kind.HARDLINK, Kind.FIFO, Kind.SOCKET, Kind.DEVICE)


def substitute_hardlinks(
    chosen: list[CatalogFile], everything: list[CatalogFile]
) -> list[CatalogFile]:
    """``chosen`` with each hard link whose first name is not chosen turned into that file.

    The first such link of a file takes the file's id and data under its own name; any
    further link to the same file then points at that name.
    """
    if not any(f.entry.kind is Kind.HARDLINK for f in chosen):
        return chosen
    chosen_files = {f.entry.path for f in chosen if f.entry.kind is Kind.FILE}
    by_path = {f.entry.path: f for f in everything if f.entry.kind is Kind.FILE}
    moved: dict[str, str] = {}
    out = []
    for f in chosen:
        e = f.entry
        if e.kind is not Kind.HARDLINK or e.link in chosen_files or e.link not in by_path:
            out.append(f)
        elif e.link in moved:
            out.append(replace(f, entry=replace(e, link=moved[e.link])))
        else:
            first = by_path[e.link]
            moved[e.link] = e.path
            out.append(CatalogFile(first.file_id, replace(first.entry, path=e.path), first.state))
    return out


def make_special(path: str, entry, restored: dict[str, str]) -> tuple[str, str]:
    """Create one special entry at ``path``; ('', '') or (kind of problem, message).

    The kind of problem is 'damaged' or 'skipped'. ``restored`` maps the original path of
    every file restored in this run to where it now is (hard link targets).
    """
    if is_real_dir(path):
        return "damaged", "a directory is in the way"
    if os.path.lexists(path):
        os.unlink(path)
    perm = entry.mode & 0o7777
    try:
        if entry.kind is Kind.HARDLINK:
            first = restored.get(entry.link)
            if first is None:
                return "damaged", f"its first name {entry.link} was not restored"
            os.link(first, path, follow_symlinks=False)
            return "", ""
        if entry.kind is Kind.FIFO:
            os.mkfifo(path, 0o600)
        elif entry.kind is Kind.SOCKET:
            os.mknod(path, stat.S_IFSOCK | 0o600)
        else:
            kind = stat.S_IFMT(entry.mode)
            if kind not in (stat.S_IFCHR, stat.S_IFBLK):
                return "damaged", "device node without a device type"
            os.mknod(path, kind | 0o600, int(entry.link or 0))
    except PermissionError as exc:
        return "skipped", f"cannot create {entry.kind} here: {exc.strerror}"
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP):
            return "skipped", f"cannot create {entry.kind} here: {exc.strerror}"
        return "damaged", str(exc)
    except ValueError:
        return "damaged", "bad device number"
    if os.geteuid() == 0:
        try:
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        except OSError as exc:  # an owner root may not give here: named by restore
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
    os.chmod(path, perm)  # the node was just made here: not a symlink
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    return "", ""
