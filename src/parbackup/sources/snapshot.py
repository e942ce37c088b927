"""Point-in-time snapshots of the sources for the length of a backup (REQUIREMENTS F4).

Two ways to get one, both context managers that yield ``{live source: path to read}``:

* ``btrfs_snapshots``: for each btrfs subvolume holding a source, a read-only snapshot
  ``<subvolume>/.parbackup-snapshot-<pid>-<id>`` (a snapshot never contains itself),
  deleted on the way out whatever happened inside. A run killed with SIGKILL cannot
  delete its snapshot: the next run on that subvolume deletes every such snapshot whose
  process is gone (and those of older versions, named without a pid).
* ``command_snapshots``: the user's own commands for LVM, ZFS or anything else. The pre
  command runs once (``sh -c``) with ``PARBACKUP_SOURCES`` (the sources, one a line) in
  its environment and prints, one a line in the same order, the path each source is to be
  read from (printing nothing means: read the sources as they are). The post command
  always runs on the way out, even when the pre command or the backup failed, with
  ``PARBACKUP_SOURCES``, ``PARBACKUP_SNAPSHOTS`` and ``PARBACKUP_STATUS`` (the set's
  status: ``complete``, ``degraded`` or ``failed``).

Entries are recorded under the live paths either way (see ``tree.scan``'s
``read_roots``).
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from parbackup.errors import SourceError
from parbackup.fileio import pid_running

SNAPSHOT_PREFIX = ".parbackup-snapshot-"
BTRFS_ROOT_INODE = 256
"""Every btrfs subvolume's top directory has this inode number."""

Notify = Callable[[str], None]


@dataclass
class Snapshot:
    """What a snapshot manager yields: ``roots`` maps each live source to the path to
    read it from; the caller sets ``status`` to how the backup ended (told to the post
    command)."""

    roots: dict[str, str] = field(default_factory=dict)
    status: str = "failed"


def _run(args: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or SourceError with the last line it complained."""
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, check=False, env=env)
    except OSError as exc:
        raise SourceError(f"{what}: cannot run {args[0]}: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SourceError(f"{what}: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def subvolume_of(path: str) -> str:
    """The top directory of the btrfs subvolume holding ``path``; SourceError if none."""
    probe = os.path.realpath(path)
    if not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    while True:
        st = os.lstat(probe)
        if stat.S_ISDIR(st.st_mode) and st.st_ino == BTRFS_ROOT_INODE:
            _run(["btrfs", "subvolume", "show", probe], f"{path} is not on btrfs")
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            raise SourceError(f"{path} is not on a btrfs subvolume")
        probe = parent


def _owner_alive(name: str) -> bool:
    """Whether the run that made the snapshot ``name`` may still be running."""
    pid_text = name[len(SNAPSHOT_PREFIX) :].partition("-")[0]
    if not pid_text.isdigit():  # an older version's name, with no pid: its run is over
        return False
    return pid_running(int(pid_text))


def remove_stale_snapshots(root: str, notify: Notify) -> list[str]:
    """Delete the snapshots runs that were killed left in the subvolume ``root``."""
    removed = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(SNAPSHOT_PREFIX)]
    except OSError:
        return removed
    for name in sorted(names):
        path = os.path.join(root, name)
        try:
            is_subvolume = os.lstat(path).st_ino == BTRFS_ROOT_INODE
        except OSError:
            continue
        if not is_subvolume or _owner_alive(name):
            continue
        try:
            _run(["btrfs", "subvolume", "delete", path], f"deleting snapshot {path}")
        except SourceError as exc:
            notify(f"{exc}; a killed run left it: delete it by hand")
            continue
        notify(f"deleted the snapshot a killed run left: {path}")
        removed.append(path)
    return removed


@contextmanager
def btrfs_snapshots(sources: Sequence[str], notify: Notify) -> Iterator[Snapshot]:
    """Read-only snapshots of the subvolumes holding ``sources``; deleted afterwards."""
    roots = {src: subvolume_of(src) for src in sources}
    for src in sources:
        if os.path.realpath(src) != src:
            raise SourceError(f"{src}: give the real path (no symlinks) with --snapshot btrfs")
    snaps: dict[str, str] = {}
    try:
        for root in sorted(set(roots.values())):
            remove_stale_snapshots(root, notify)
            snap = os.path.join(root, f"{SNAPSHOT_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
            _run(["btrfs", "subvolume", "snapshot", "-r", root, snap], f"snapshot of {root}")
            snaps[root] = snap
        yield Snapshot({src: snaps[root] + src[len(root) :] for src, root in roots.items()})
    finally:
        for snap in snaps.values():
            try:
                _run(["btrfs", "subvolume", "delete", snap], f"deleting snapshot {snap}")
            except SourceError as exc:
                notify(f"{exc}; delete it by hand")


@contextmanager
def command_snapshots(
    sources: Sequence[str], pre: str, post: str, notify: Notify
) -> Iterator[Snapshot]:
    """Run the user's snapshot commands around the backup; see the module docstring."""
    env = {**os.environ, "PARBACKUP_SOURCES": "\n".join(sources)}
    paths: list[str] = []
    snap = Snapshot()
    try:
        if pre:
            out = _run(["sh", "-c", pre], "--pre-command failed", env)
            paths = [line.strip() for line in out.splitlines() if line.strip()]
            if paths and len(paths) != len(sources):
                raise SourceError(
                    f"--pre-command printed {len(paths)} paths for {len(sources)} sources"
                )
            for p in paths:
                if not os.path.isabs(p) or not os.path.lexists(p):
                    raise SourceError(f"--pre-command named {p!r}, which does not exist")
        snap.roots = dict(zip(sources, paths, strict=True)) if paths else {}
        yield snap
    finally:
        if post:
            env["PARBACKUP_SNAPSHOTS"] = "\n".join(paths)
            env["PARBACKUP_STATUS"] = snap.status
            proc = subprocess.run(["sh", "-c", post], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                notify(f"--post-command failed (exit {proc.returncode}): {proc.stderr.strip()}")
