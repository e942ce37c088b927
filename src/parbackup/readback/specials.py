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
from parbackup.readback.beneath import Beneath

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


def make_special(
    path: str, entry, restored: dict[str, str], safe: Beneath | None = None
) -> tuple[str, str]:
    """Create one special entry at ``path``; ('', '') or (kind of problem, message).

    The kind of problem is 'damaged' or 'skipped'. ``restored`` maps the original path of
    every file restored in this run to where it now is (hard link targets). Every name is
    used relative to its directory, opened without following a symlink below the target
    (``safe``, readback/beneath.py).
    """
    safe = safe or Beneath("/")
    try:
        with safe.parent(path) as (fd, name):
            return _make(fd, name, entry, restored, safe)
    except OSError as exc:
        return "damaged", f"{path}: {exc.strerror or exc}"


def _make(fd: int, name: str, entry, restored: dict[str, str], safe: Beneath) -> tuple[str, str]:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            return "damaged", "a directory is in the way"
        os.unlink(name, dir_fd=fd)
    perm = entry.mode & 0o7777
    try:
        if entry.kind is Kind.HARDLINK:
            first = restored.get(entry.link)
            if first is None:
                return "damaged", f"its first name {entry.link} was not restored"
            with safe.parent(first) as (src_fd, src_name):
                os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
            return "", ""
        if entry.kind is Kind.FIFO:
            os.mkfifo(name, 0o600, dir_fd=fd)
        elif entry.kind is Kind.SOCKET:
            os.mknod(name, stat.S_IFSOCK | 0o600, dir_fd=fd)
        else:
            kind = stat.S_IFMT(entry.mode)
            if kind not in (stat.S_IFCHR, stat.S_IFBLK):
                return "damaged", "device node without a device type"
            os.mknod(name, kind | 0o600, int(entry.link or 0), dir_fd=fd)
    except PermissionError as exc:
        return "skipped", f"cannot create {entry.kind} here: {exc.strerror}"
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP):
            return "skipped", f"cannot create {entry.kind} here: {exc.strerror}"
        return "damaged", str(exc)
    except ValueError:
        return "damaged", "bad device number"
    # the node itself, through an O_PATH descriptor (never opened, never a symlink)
    node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        if not stat.S_ISLNK(os.fstat(node).st_mode):
            _node_metadata(f"/proc/self/fd/{node}", entry, perm)
    finally:
        os.close(node)
    return "", ""


def _node_metadata(proc_path: str, entry, perm: int) -> None:
    """Owner (as root), mode and times of a node through its ``/proc/self/fd`` link."""
    if os.geteuid() == 0:
        try:
            os.chown(proc_path, entry.uid, entry.gid)
        except OSError as exc:  # an owner root may not give here: named by restore
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
    os.chmod(proc_path, perm)
    os.utime(proc_path, ns=(entry.mtime_ns, entry.mtime_ns))
