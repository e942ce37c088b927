"""Where a backup's movers start: forked from one warm server that imported them once.

A mover used to be a fresh interpreter of its own (workers.py ``LocalExecutor``), which
then imported the engine, its device and its source: about 0.13 CPU s each on this
machine, paid once per device (0.27 s of a 2-device backup's ~2.6, issue 10). Forked
from a fork server (forkserver.py) that imported ``PRELOAD`` once, each starts with
them imported and costs a fork: N devices pay one import instead of N. The server is a
fresh interpreter too (no threads, no half-taken locks of the controller's), and the
CLI warms it before its own imports (cli/main.py), so its start runs on the core the
controller leaves idle, as the movers started ahead used to.
"""

from __future__ import annotations

from parbackup.forkserver import ForkServerExecutor

MOVER = "parbackup.engine.mover:move"
"""The worker a backup runs for each device (engine/fleet.py starts it)."""
PRELOAD = ("parbackup.engine.mover", "parbackup.devices.local", "parbackup.sources.local")
"""What the server imports for every mover: the mover, and the device and source kinds
of a local backup (others are imported by the mover that opens one)."""


def mover_executor() -> ForkServerExecutor:
    """The default executor of a backup's movers (one server per program)."""
    return ForkServerExecutor(preload=PRELOAD)
