"""CPU of taking and dropping a catalog's run lock and readers' lock (catalog/runlock.py),
with HELD flocks held meanwhile by another process on the same file system (what the look
for a holder of a deleted lock file reads: /proc/locks and each holder's descriptors).
Alternating rounds of this tree's src and, with --before, an older one's.

Run: .venv/bin/python bench/lock_cost.py --work W [--held 50] [--rounds 5] [--before OLD/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
CALLS = 2000
ONE = f"""
import sys, time
from parbackup.catalog.runlock import ReadLock, RunLock
out = []
for lock, take in ((RunLock(sys.argv[1]), "acquire"), (ReadLock(sys.argv[1]), "exclusive")):
    t = time.process_time()
    for _ in range({CALLS}):
        getattr(lock, take)()
        lock.release()
    out.append((time.process_time() - t) / {CALLS} * 1e6)
print(*out)
"""
HOLD = """
import fcntl, os, sys
fds = []
for i in range(int(sys.argv[2])):
    fds.append(os.open(os.path.join(sys.argv[1], f"held{i}"), os.O_RDWR | os.O_CREAT))
    fcntl.flock(fds[-1], fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", help="an older tree's src, run in alternating rounds")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, args.work, str(args.held)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    trees = {"new": SRC, **({"old": args.before} if args.before else {})}
    got: dict[str, list[list[float]]] = {k: [] for k in trees}
    with open("/proc/locks") as f:
        held = sum(1 for _ in f)
    try:
        for _ in range(args.rounds):
            for name, src in trees.items():
                cat = os.path.join(args.work, "cat.sqlite")
                out = subprocess.run(
                    [sys.executable, "-c", ONE, cat],
                    env={**os.environ, "PYTHONPATH": src},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                got[name].append([float(x) for x in out.split()])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    print(f"{args.held} flocks held by another process ({held} in /proc/locks);"
          " CPU us per lock taken and dropped")  # fmt: skip
    for name, rows in got.items():
        run = statistics.median(r[0] for r in rows)
        read = statistics.median(r[1] for r in rows)
        print(f"{name}: run lock {run:.1f} us, readers' lock (exclusive) {read:.1f} us")


if __name__ == "__main__":
    main()
