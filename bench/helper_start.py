"""The split scan's helper start: forked from the movers' server, or a fresh interpreter.

    .venv/bin/python bench/helper_start.py TREE [--rounds 10]

Starts the scan helper (engine/splitscan.py ``scan_part``) with its empty first part,
as ``scan_tree`` does, and waits for its "ready" (that part's ``PartDone``): from the
movers' warm fork server (engine/movers.py, as a backup's helper) and as a fresh
interpreter (``LocalExecutor``, the fallback and ``plan``'s). Prints the medians of
the time to ready and of the helper's CPU until then (/proc/PID/schedstat). No root
needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from parbackup.engine.movers import mover_executor
from parbackup.engine.splitscan import TARGET, ScanPart
from parbackup.sources.base import SourceSpec
from parbackup.workers import Executor, LocalExecutor
from split_scan import pid_of


def ready(executor: Executor, spec: SourceSpec) -> tuple[float, float]:
    """(seconds until the helper said it is ready, its CPU seconds by then)."""
    t0 = time.perf_counter()
    worker = executor.start(TARGET, ScanPart(spec, []), name="scan")
    try:
        assert worker.channel.poll(60), "the helper never said it is ready"
        worker.channel.recv()
        wall = time.perf_counter() - t0
        with open(f"/proc/{pid_of(worker)}/schedstat") as fh:
            return wall, int(fh.read().split()[0]) / 1e9
    finally:
        worker.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    spec = SourceSpec("tree", args.tree, args.tree)
    forked = mover_executor()
    ready(forked, spec)  # the server warm, as the movers' forks leave it in a backup
    got: dict[str, list[tuple[float, float]]] = {"forked": [], "interpreter": []}
    for _ in range(args.rounds):
        got["forked"].append(ready(forked, spec))
        got["interpreter"].append(ready(LocalExecutor(), spec))
    for name, runs in got.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:12s} ready after {wall * 1000:.1f} ms, helper CPU {cpu * 1000:.1f} ms")


if __name__ == "__main__":
    main()
