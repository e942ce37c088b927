#!/usr/bin/env python3
"""Where the processes of one backup sleep: CPU, run-queue wait and voluntary sleep.

Runs one ``parbackup backup TREE -d W/d1 -d W/d2`` (W: ``--work``, put it on a tmpfs)
and polls ``/proc/PID/task/*/schedstat`` of every process of the run every few
milliseconds: per process its lifetime, CPU time, time spent runnable but waiting for a
core (run-queue wait) and the rest, time it slept of its own accord (waiting on a pipe,
a lock, the device). A strip shows that sleep per 0.25 s (" " under 10%, "." < 35%,
":" < 65%, "+" < 90%, "#" more). On a loaded machine wall times stretch, but a process
that never sleeps of its own accord while it works is CPU-bound: on a quiet machine it
would keep a core busy all along.

    .venv/bin/python bench/sched_sleep.py --work /tmp/NAME/sched TREE -- --encrypt
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def family(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    out += family(int(child))
    except OSError:
        pass
    return out


def sample(pid: int) -> tuple[int, int]:
    """(CPU ns, run-queue wait ns) of all threads of ``pid``."""
    cpu = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            c, w, _ = fh.read().split()
        cpu, wait = cpu + int(c), wait + int(w)
    return cpu, wait


def strip(samples: list[tuple[float, int, int]], first: float) -> str:
    bins: dict[int, list[float]] = {}
    for (t0, c0, w0), (t1, c1, w1) in itertools.pairwise(samples):
        b = bins.setdefault(int(t1 / 0.25), [0.0, 0.0])
        b[0] += t1 - t0
        b[1] += (c1 - c0 + w1 - w0) / 1e9
    marks = ""
    start = int(first / 0.25)
    for k in range(start, max(bins, default=start) + 1):
        span, busy = bins.get(k, (0.0, 0.0))
        slept = max(0.0, 1 - busy / span) if span else 0.0
        marks += " .:+#"[sum(slept >= x for x in (0.1, 0.35, 0.65, 0.9))]
    return " " * start + marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("--work", required=True)
    ap.add_argument("extra", nargs="*", help="more backup options (after --)")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    for d in ("d1", "d2"):
        os.makedirs(os.path.join(args.work, d))
    env = {**os.environ, "PARBACKUP_PASSWORD": "bench", "PYTHONPATH": str(SRC)}
    argv = [sys.executable, "-m", "parbackup", "backup", args.tree,
            "-d", f"{args.work}/d1", "-d", f"{args.work}/d2",
            "--catalog", f"{args.work}/cat.sqlite", "--json", *args.extra]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    started = time.monotonic()
    seen: dict[int, dict] = {}
    while proc.poll() is None:
        now = time.monotonic() - started
        for pid in family(proc.pid):
            try:
                cpu, wait = sample(pid)
                if pid not in seen:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                    seen[pid] = {"first": now, "cmd": cmd[-50:], "samples": []}
            except (OSError, ValueError):
                continue
            seen[pid]["last"] = now
            seen[pid]["samples"].append((now, cpu, wait))
        time.sleep(0.003)
    print(f"wall {time.monotonic() - started:.2f} s, exit {proc.returncode}")
    for pid, s in seen.items():
        life = s["last"] - s["first"]
        _, cpu, wait = s["samples"][-1]
        slept = life - (cpu + wait) / 1e9
        print(f"{pid:7} {s['first']:6.2f}-{s['last']:6.2f} s: CPU {cpu / 1e9:5.2f}, run-queue "
              f"wait {wait / 1e9:5.2f}, slept {slept:5.2f}  {s['cmd']}")  # fmt: skip
        print(f"        sleep |{strip(s['samples'], s['first'])}|")
    shutil.rmtree(args.work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
