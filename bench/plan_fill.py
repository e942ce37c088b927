"""CPU of the fill plan of a million small files, for old and new code alternately.

    .venv/bin/python bench/plan_fill.py [--src OTHER/src ...] [--items 1000000] [--rounds 3]

Plans ``--items`` whole files of bench/scale.py's sizes (0-1023 bytes; every 1001st
empty) onto 2 devices without a room limit: ``plan(Pieces.whole_files(sizes), ...)``,
what ``make_plan`` runs after a scan. Each ``--src`` (default: this checkout's) runs in a
child process, one after the other in each round; prints the best CPU seconds of 3
plans per run and a hash of the plan's columns (equal hashes: the same plan).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
_CHILD = r"""
import hashlib, sys, time
sys.path.insert(0, sys.argv[1])
from array import array
from parbackup.engine.gcpause import paused_gc
from parbackup.model import Pieces, Slot
from parbackup.plan.planner import plan
n = int(sys.argv[2])
sizes = array("q", [0 if i % 1001 == 0 else (i * 7919) % 1024 for i in range(n)])
best = float("inf")
for _ in range(3):
    with paused_gc():
        started = time.process_time()
        p = plan(Pieces.whole_files(sizes), [Slot(None), Slot(None)])
        best = min(best, time.process_time() - started)
digest = hashlib.sha1(b"".join(bytes(c) for c in (p.file, p.offset, p.size, p.device)))
print(f"{best:.3f} s, {best / n * 1e6:.2f} us an item, plan {digest.hexdigest()[:12]}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", action="append", help="a checkout's src/ (default: this one's)")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        for src in args.src or [str(SRC)]:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, src, str(args.items)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            print(f"round {r} {src}: {out}", flush=True)


if __name__ == "__main__":
    main()
