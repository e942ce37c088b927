"""The split scan's price and gain: one tree scanned with and without its helper.

    .venv/bin/python bench/split_scan.py TREE [--rounds 6] [--split-at 20000] [--forked]

Scans TREE (a local tree, as a backup's scan does: engine/splitscan.py) in this
process, in alternating rounds: ``split`` with the helper started at ``--split-at``
entries whatever the load (a core said to be spare), ``one`` without a helper. Prints
per run and as medians: wall, this process's CPU, the helper's CPU (its process waited
for after the scan, from ``RUSAGE_CHILDREN``) and the entries. The split pays in wall
time only where the helper has a core nobody else wants; its price is the sum of the
two CPU columns against ``one``'s. No root needed. ``--forked``: the helper is forked
from the movers' warm fork server, as a backup's is (engine/movers.py ``scan_helpers``),
its CPU read from /proc/PID/schedstat just before the scan kills it (it is not this
process's child).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from parbackup.engine.movers import mover_executor
from parbackup.engine.splitscan import scan_tree
from parbackup.entries import Entries
from parbackup.sources.base import SourceSpec
from parbackup.sources.local import LocalTree
from parbackup.workers import LocalExecutor


class _Waited(LocalExecutor):
    """The local executor, keeping the helpers it starts to wait for them."""

    def __init__(self) -> None:
        self.started: list = []

    def start(self, target, spec, name="", host=""):  # type: ignore[no-untyped-def]
        worker = super().start(target, spec, name, host)
        self.started.append(worker)
        return worker


def pid_of(worker) -> int:  # type: ignore[no-untyped-def]
    """A worker's process id: a local child's, or read off a forked one's pidfd."""
    if hasattr(worker, "proc"):
        return worker.proc.pid
    with open(f"/proc/self/fdinfo/{worker.pidfd}") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Pid:"))


class _Forked:
    """The movers' executor, adding up its helpers' CPU seconds as they are killed."""

    def __init__(self) -> None:
        self.executor = mover_executor()
        self.cpu = 0.0
        self.started: list = []

    def start(self, target, spec, name="", host=""):  # type: ignore[no-untyped-def]
        worker = self.executor.start(target, spec, name, host)
        pid = pid_of(worker)
        kill = worker.kill

        def measured_kill() -> None:
            try:
                with open(f"/proc/{pid}/schedstat") as fh:
                    self.cpu += int(fh.read().split()[0]) / 1e9
            except OSError:
                pass
            kill()

        worker.kill = measured_kill
        return worker


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one_scan(
    tree: str, split_at: int | None, forked: bool = False
) -> tuple[float, float, float, int]:
    """(wall, CPU here, CPU of the helper, entries) of one scan of ``tree``."""
    if forked:
        executor = _Forked()
        out = Entries()
        src = LocalTree(SourceSpec(tree, tree, tree))
        t0, c0 = time.perf_counter(), time.process_time()
        scan_tree(src, out, 0, lambda p, e: None, executor, split_at or 1 << 62, lambda: True)
        wall, here = time.perf_counter() - t0, time.process_time() - c0
        return wall, here, executor.cpu, len(out)
    executor = _Waited()
    out = Entries()
    src = LocalTree(SourceSpec(tree, tree, tree))
    before = _children_cpu()
    t0, c0 = time.perf_counter(), time.process_time()
    at = split_at if split_at is not None else 1 << 62
    scan_tree(src, out, 0, lambda p, e: None, executor, at, lambda: True)
    wall, here = time.perf_counter() - t0, time.process_time() - c0
    for worker in executor.started:
        worker.join(30)
    return wall, here, _children_cpu() - before, len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--split-at", type=int, default=20_000)
    ap.add_argument("--forked", action="store_true", help="the helper forked (a backup's)")
    args = ap.parse_args()
    if args.forked:  # warm, as the movers' forks leave it in a backup
        mover_executor().start("parbackup.engine.splitscan:scan_part", None).kill()
    got: dict[str, list[tuple[float, float, float, int]]] = {"split": [], "one": []}
    for r in range(args.rounds):
        order = ("split", "one") if r % 2 == 0 else ("one", "split")
        for name in order:
            m = one_scan(args.tree, args.split_at if name == "split" else None, args.forked)
            got[name].append(m)
            print(
                f"round {r} {name:5s} wall {m[0]:.3f} s, CPU here {m[1]:.3f} s, helper"
                f" {m[2]:.3f} s, {m[3]} entries, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    for name, runs in got.items():
        med = [statistics.median(x[i] for x in runs) for i in range(3)]
        print(
            f"{name:5s} median: wall {med[0]:.3f} s, CPU here {med[1]:.3f} s, helper"
            f" {med[2]:.3f} s, sum {med[1] + med[2]:.3f} s"
        )


if __name__ == "__main__":
    main()
