"""How one restored file is written: its hidden ``.part`` name, opening it safely, its
payload written with holes left for zeros (F2), and its mode, owner and times.

Shared by the readers' directory sink (readback/sinks.py), which writes most files, and
the controller (readback/parts.py, readback/links.py), which makes the ``.part`` of
files split over devices and the empty files, and gives links and directories their
metadata: one rule for the names and the writes, whichever process does them. Plain
``os`` calls on the descriptors and names handed in: the callers open directories
beneath the target (readback/beneath.py); nothing here imports the rest of readback.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from parbackup.fileio import write_all

BLOCK = 4096
"""Holes are left for all-zero blocks of this size (a file system's page)."""
_ZERO_BLOCK = bytes(BLOCK)
_ZEROS = bytes(1 << 20)


def part_name(dest: str, fid: int, tag: str = "") -> str:
    """The hidden temporary name a file is restored under, next to its destination."""
    return os.path.join(os.path.dirname(dest), part_leaf(fid, tag))


def parent_of(dest: str) -> str:
    """``os.path.dirname`` of a destination (readback/paths.py ``target_path``: absolute,
    no empty component, no trailing slash), without its general work."""
    return dest.rpartition("/")[0] or "/"


def part_leaf(fid: int, tag: str = "") -> str:
    """A ``.part``'s name within its directory (``part_tag``: ``tag``)."""
    return f".parbackup-{fid}{tag}.part"


def open_part(leaf: str, flags: int, dir_fd: int | None, *, new: bool) -> int:
    """A ``.part``'s descriptor (``leaf`` in ``dir_fd``, opened with ``flags``).

    ``new``: a file made now, never one found there: whatever held the name is unlinked
    first. The names are easy to guess, and the target may hold one already: a hard link
    to a file elsewhere must never be truncated, filled with the restored bytes and given
    their mode and owner (``O_NOFOLLOW`` refuses a symlink, not a hard link).
    Else (a file split over devices, made by whichever of its writers comes first, or a
    ``.part`` opened again): OSError unless it is a regular file with no other name, as
    every ``.part`` this restore makes is until it is renamed. Its owner is not asked:
    on a root-squashed mount root's files belong to another user."""
    if new:
        flags |= os.O_CREAT | os.O_EXCL
        try:
            return os.open(leaf, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            os.unlink(leaf, dir_fd=dir_fd)  # a directory in the way: IsADirectoryError
        return os.open(leaf, flags, 0o600, dir_fd=dir_fd)
    fd = os.open(leaf, flags, 0o600, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EEXIST, "a file this restore did not make holds its .part name")
    return fd


def part_tag(names: Iterable[str]) -> str:
    """'' unless an entry restored is itself named like a ``.part`` (``.parbackup-7.part``:
    a killed restore's leftover backed up since, or a crafted name); then ``~N``, the
    first N no such name ends with, so no ``.part`` is ever an entry's name: file 7's
    ``.part`` would take that entry's place, or be renamed over by it, and one of the
    two files be lost (or restored with the other's bytes). The same set and selection
    give the same tag, so a rerun finds what a killed run left."""
    like = [n for n in names if n.startswith(".parbackup-") and n.endswith(".part")]
    if not like:
        return ""
    n = 1
    while any(name.endswith(f"~{n}.part") for name in like):
        n += 1
    return f"~{n}"


def set_metadata(
    path: str | int,
    mode: int,
    uid: int,
    gid: int,
    mtime_ns: int,
    *,
    follow: bool = True,
    root: bool | None = None,
) -> bool:
    """Mode, owner (when running as root) and times of a path or an open file descriptor
    (no name looked up again); never follows a symlink. False when the owner was not given.
    ``root``: whether this process runs as root, when the caller knows (else asked).

    An owner this root may not give (EPERM, EINVAL: a user namespace that does not map
    that uid, a root-squashed mount) is left as it is: the data, mode and times still
    count. Restore names each such owner afterwards (readback/fidelity.py).
    """
    owned = True
    if root if root is not None else os.geteuid() == 0:
        try:
            os.chown(path, uid, gid, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
            owned = False
    if follow:
        os.chmod(path, mode & 0o7777)
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=follow)
    return owned


def is_zero(payload: memoryview) -> bool:
    """True when every byte of ``payload`` is zero (restored as a hole, F2)."""
    step = len(_ZEROS)
    if len(payload) and payload[0]:  # most records: no slice of zeros to compare with
        return False
    if len(payload) <= step:  # one comparison
        return payload == _ZEROS[: len(payload)]
    return all(
        payload[at : at + step] == _ZEROS[: len(payload[at : at + step])]
        for at in range(0, len(payload), step)
    )


def write_sparse(fd: int, payload: memoryview, offset: int) -> int:
    """Write ``payload`` at ``offset``, skipping all-zero 4 KiB blocks (left as holes);
    where the bytes written end (``offset`` if none were)."""
    n = len(payload)
    if n <= BLOCK and (payload[0] or payload != _ZERO_BLOCK[:n]):  # no holes in it
        write_all(fd, payload, offset)
        return offset + n
    run = -1  # start of the current run of non-zero blocks
    end = 0
    for at in range(0, n, BLOCK):
        # a block whose first byte is not zero is not compared (most are not)
        if not payload[at] and payload[at : at + BLOCK] == _ZERO_BLOCK[: min(BLOCK, n - at)]:
            if run >= 0:
                write_all(fd, payload[run:at], offset + run)
                run, end = -1, at
        elif run < 0:
            run = at
    if run >= 0:
        write_all(fd, payload[run:n], offset + run)
        end = n
    return offset + end
