"""Running a backup from a point-in-time snapshot of its sources (REQUIREMENTS F4).

The snapshot is taken before the scan and released after the set is recorded, whether
the backup succeeded, failed or raised; see ``sources.snapshot`` for the two kinds.

The user's commands run under the catalog's run lock (a second backup, refused by the
lock, must not run its post command: that would release the snapshot the first run is
reading). parbackup cannot know what a ``--pre-command`` made, but it knows how the user
releases it: before the pre command runs, the run records its post command in the
catalog (``meta`` key ``post-command/<pid>-<id>``: host, pid and its start time,
sources, the snapshot paths once printed), and removes the record once the post command
ran. A run killed with SIGKILL leaves the record; the next backup on that catalog (on
the same host, the killed process gone) runs that post command with
``PARBACKUP_STATUS=interrupted``, once, before its own pre command, and says so; a run
killed with a pre command and no post command is named, with what it printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace

from parbackup.catalog import Catalog
from parbackup.errors import UsageError
from parbackup.progress import EventSink, Notice
from parbackup.sources.registry import spec_for
from parbackup.sources.snapshot import Snapshot, btrfs_snapshots, command_snapshots

SNAPSHOT_KINDS = ("btrfs",)
PENDING = "post-command/"
"""Prefix of the catalog ``meta`` keys of runs whose post command has not run yet."""


def _started(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks after boot), or '' if it is gone.

    With the pid it names one process: a pid reused later has another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def _record(
    catalog: Catalog, key: str, sources: Sequence[str], pre: str, post: str, snaps: list[str]
) -> None:
    """Write (or update) this run's pending post command into the catalog."""
    pid = os.getpid()
    doc = {
        "host": socket.gethostname(),
        "pid": pid,
        "started": _started(pid),
        "sources": list(sources),
        "pre": pre,
        "post": post,
        "snapshots": snaps,
    }
    catalog.set_meta(key, json.dumps(doc))


def release_leftovers(catalog: Catalog, notify: Callable[[str], None]) -> None:
    """Run the post command of every killed run that recorded one; call under the run
    lock. A run still alive (releasing its snapshot after its set was recorded) or of
    another host is left alone (the latter named)."""
    for key, text in sorted(catalog.meta_items(PENDING).items()):
        try:
            doc = json.loads(text)
            pid, post = int(doc["pid"]), str(doc["post"])
            snapshots = [str(p) for p in doc.get("snapshots", [])]
        except (ValueError, KeyError, TypeError):
            catalog.set_meta(key, None)  # not ours to read: nothing can be run from it
            continue
        what = ", ".join(snapshots) or "nothing it printed"
        if doc.get("host") != socket.gethostname():
            notify(
                f"a backup killed on host {doc.get('host')} (pid {pid}) did not run its"
                f" --post-command; run it there ({what})"
            )
            continue
        if pid == os.getpid() or (_started(pid) and _started(pid) == doc.get("started")):
            continue  # alive: it runs its own post command
        catalog.set_meta(key, None)  # once: a command that fails is named, not retried
        if not post:
            notify(
                f"a backup killed (pid {pid}) left what its --pre-command made ({what});"
                " it had no --post-command: release it by hand"
            )
            continue
        env = {
            **os.environ,
            "PARBACKUP_SOURCES": "\n".join(doc.get("sources", [])),
            "PARBACKUP_SNAPSHOTS": "\n".join(snapshots),
            "PARBACKUP_STATUS": "interrupted",
        }
        proc = subprocess.run(["sh", "-c", post], env=env, capture_output=True, text=True)
        if proc.returncode == 0:
            notify(f"ran the --post-command of a backup killed (pid {pid}): released {what}")
        else:
            notify(
                f"the --post-command of a backup killed (pid {pid}) failed (exit"
                f" {proc.returncode}): {proc.stderr.strip()}; release {what} by hand"
            )


def backup_from_snapshot(
    run: Callable,
    sources: Sequence[str],
    device_urls: Sequence[str],
    catalog: Catalog,
    options,
    on_event: EventSink,
):
    """``run`` (run_backup) over a snapshot of ``sources``, released afterwards."""
    live = [spec_for(s).name if s != "-" else s for s in sources]

    def notify(message: str) -> None:
        on_event(Notice(message))

    manager: AbstractContextManager[Snapshot]
    key = ""
    if options.snapshot:
        if options.snapshot not in SNAPSHOT_KINDS:
            raise UsageError(f"unknown snapshot kind {options.snapshot!r} (known: btrfs)")
        if options.pre_command or options.post_command:
            raise UsageError("--snapshot btrfs takes no --pre-command/--post-command")
        manager = btrfs_snapshots(live, notify)
    else:
        pre, post = options.pre_command, options.post_command
        catalog.lock_for_run()  # before the user's commands: see the module docstring
        release_leftovers(catalog, notify)
        key = f"{PENDING}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        _record(catalog, key, live, pre, post, [])
        manager = command_snapshots(live, pre, post, notify)
    try:
        with manager as snap:
            if key:
                _record(catalog, key, live, pre, post, list(snap.roots.values()))
            inner = replace(
                options,
                snapshot="",
                pre_command="",
                post_command="",
                read_roots=tuple(snap.roots.items()),
            )
            report = run(live, device_urls, catalog, inner, on_event)
            snap.status = report.status
    finally:
        if key:  # the manager ran the post command, however the run ended
            catalog.set_meta(key, None)
    return report
