"""Where a backup's movers start: forked from one warm server that imported them once.

A mover used to be a fresh interpreter of its own (workers.py ``LocalExecutor``), which
then imported the engine, its device and its source: about 0.13 CPU s each on this
machine, paid once per device (0.27 s of a 2-device backup's ~2.6, issue 10). Forked
from a fork server (forkserver.py) that imported ``PRELOAD`` once, each starts with
them imported and costs a fork: N devices pay one import instead of N. The server is a
fresh interpreter too (no threads, no half-taken locks of the controller's), and the
CLI warms it before its own imports (cli/early.py), so its start runs on the core the
controller leaves idle, as the movers started ahead used to.

The split scan's helper comes from the same server (``scan_helpers``): a fork, where a
fresh interpreter importing the scan cost about 0.1 s of CPU. ``plan`` scans the same
way (cli/plan.py); it starts no movers, so its server is started by the scan itself,
half way to the split (engine/splitscan.py).
"""

from __future__ import annotations

from parbackup.forkserver import ForkServerExecutor
from parbackup.workers import Executor

MOVER = "parbackup.engine.mover:move"
"""The worker a backup runs for each device (engine/fleet.py starts it)."""
PRELOAD = (
    "parbackup.engine.mover",
    "parbackup.devices.local",
    "parbackup.sources.local",
    "parbackup.engine.splitscan",
)
"""What the server imports for every mover: the mover, and the device and source kinds
of a local backup (others are imported by the mover that opens one); and the split
scan's helper (engine/splitscan.py), forked from the same server."""


def mover_executor() -> ForkServerExecutor:
    """The default executor of a backup's movers (one server per program)."""
    return ForkServerExecutor(preload=PRELOAD)


def scan_helpers(executor: Executor | None) -> Executor | None:
    """Where a backup's (or a plan's) split scan starts its helper: forked from the
    movers' server when the movers run there (``executor`` None; always for a plan);
    otherwise the scan's own default (a fresh local interpreter), never an executor that
    may run it on another host. A server that cannot run falls back to that interpreter
    itself (forkserver.py)."""
    return mover_executor() if executor is None else None
