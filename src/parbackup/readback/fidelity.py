"""Extended attributes and ownership back onto restored entries (REQUIREMENTS E3).

Runs once every entry is in place and has its mode, owner and times (restore.py), so the
order the kernel needs holds: ``security.capability`` after chown (which clears it), the
access ACL after chmod (which rewrites its mask), a directory's default ACL after the
files inside it were created (they do not inherit it: they get their own). Setting an
attribute changes only the ctime, so the restored times stay.

What the target cannot take (a file system without extended attributes or without one
namespace, ``trusted.*`` or capabilities without privilege, another owner when not
root) is left out and named, one entry per path: the data is restored all the same and
the restore ends with warnings (exit 3), never fails.
"""

from __future__ import annotations

import os

from parbackup import xattrs
from parbackup.catalog import CatalogFile
from parbackup.errors import FormatError
from parbackup.model import Kind
from parbackup.readback.beneath import Beneath

_TOLD = (Kind.FILE, Kind.DIR, Kind.SYMLINK)
"""Kinds whose restore says which owners it could not give (``unowned``)."""


def restore_extended(
    chosen: list[CatalogFile],
    dest: dict[int, str],
    restored: set[str],
    unowned: set[int] | None = None,
    safe: Beneath | None = None,
) -> list[dict]:
    """Set the attributes of every restored entry of ``chosen`` (original paths in
    ``restored``); one ``{"path", "left_out", "error"}`` per entry something was left out
    of. A hard link shares its first name's inode, so it has nothing of its own.

    ``unowned``: the ids of files, directories and symlinks whose owner root could not
    give; the owner of every other entry of those kinds is not looked at again (None:
    look at every entry's). ``safe``: the restore target; each entry is then reached
    through its parent directory opened beneath it (no symlink below the target is
    followed, even one swapped in since the entry was made)."""
    left_out: list[dict] = []
    root = os.geteuid() == 0
    uid, groups = os.geteuid(), {os.getegid(), *os.getgroups()}
    if root and unowned is not None:  # only these have anything to look at (a set's
        told = _TOLD  # entries are many: one cheap pass picks them out)
        chosen = [f for f in chosen if f.entry.meta or f.file_id in unowned
                  or f.entry.kind not in told]  # fmt: skip
    for f in chosen:
        e = f.entry
        if e.kind is Kind.HARDLINK or f.file_id not in dest or e.path not in restored:
            continue
        names: list[str] = []
        reasons: list[str] = []
        if not root and (e.uid != uid or e.gid not in groups):
            names.append(f"owner {e.uid}:{e.gid}")
            reasons.append("only root may give files away")
        elif root and (unowned is None or f.file_id in unowned or e.kind not in _TOLD):
            # root may not give every owner either: a user namespace maps a few
            try:
                st = os.lstat(dest[f.file_id])
            except OSError:
                st = None
            if st is not None and (st.st_uid, st.st_gid) != (e.uid, e.gid):
                names.append(f"owner {e.uid}:{e.gid}")
                reasons.append(
                    f"owner {e.uid}:{e.gid} could not be set (left {st.st_uid}:{st.st_gid})"
                )
        if e.meta:
            try:
                refused = _apply(dest[f.file_id], e.meta, safe)
            except FormatError as exc:  # a damaged catalog row: the data is still good
                refused = [("extended attributes", str(exc))]
            except OSError as exc:  # its directory is no longer below the target
                refused = [("extended attributes", f"{dest[f.file_id]}: {exc.strerror or exc}")]
            for name, why in refused:
                names.append(name)
                if why not in reasons:
                    reasons.append(why)
        if names:
            left_out.append({"path": e.path, "left_out": names, "error": "; ".join(reasons)})
    return left_out


def _apply(path: str, payload: bytes, safe: Beneath | None) -> list[tuple[str, str]]:
    """``xattrs.apply`` on ``path``; with ``safe``, through ``/proc/self/fd/N/NAME`` of
    its parent opened beneath the target (the last name is not followed either)."""
    if safe is None:
        return xattrs.apply(path, payload)
    with safe.parent(path) as (fd, name):
        return xattrs.apply(f"/proc/self/fd/{fd}/{name}", payload)
