"""Where a restore's CPU goes, per process: the controller before its readers start,
each reader, the controller after they end; checkouts compared in alternating rounds.

    sudo .venv/bin/python bench/restore_phases.py --catalog CAT --target EMPTY_DIR \\
        --rounds 3 /path/to/checkout-a /path/to/checkout-b

Restores the latest set of ``CAT`` (a backup made beforehand, e.g. onto two tmpfs
devices) into ``EMPTY_DIR`` (emptied after each run) with each checkout's ``src/``. The
processes of a run are told by an environment marker, polled every 10 ms from /proc: the
controller (the child), the fork server (its child) and the readers (the fork server's
children). Printed per run, in CPU seconds: ``pre`` (the controller until the first
reader appears), ``busiest`` (the reader that used the most), ``post`` (the controller
after the last reader ended), ``controller`` (all of the controller's),
``critical`` (pre + the busiest reader + post: what the wall time approaches on an idle
machine with a core per reader) and ``total``; and the peak RSS (VmHWM) of the
controller and the readers summed, in MB (the fork server not counted). CPU seconds
hold under load far better than wall times, which this machine's neighbours make swing
by 2-5 times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

from common import wipe

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: str) -> tuple[str, float] | None:
    """(parent pid, user + system CPU seconds) of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[1], (int(fields[11]) + int(fields[12])) / TICK


def hwm_mb(pid: str) -> float:
    """A live process's peak resident set (VmHWM) in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def marked(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read()
    except OSError:
        return False


def one_run(checkout: str, catalog: str, target: str) -> dict[str, float]:
    """Restore once with ``checkout``'s code; the phases in CPU seconds."""
    token = uuid.uuid4().hex
    env = {
        **os.environ,
        "PYTHONPATH": os.path.join(checkout, "src"),
        "PARBACKUP_CATALOG": catalog,
        "PB_PHASES": token,
    }
    marker = f"PB_PHASES={token}".encode()
    argv = [sys.executable, "-m", "parbackup", "restore", "-t", target, "--json"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    me = str(proc.pid)
    readers: dict[str, float] = {}  # pid -> last CPU seen
    ended: dict[str, float] = {}  # pid -> the controller's CPU when it was last seen
    first: float | None = None  # the controller's CPU when the first reader appeared
    foreign: set[str] = set()
    ctl = 0.0
    peaks: dict[str, float] = {}  # pid -> VmHWM in MB, the controller's and the readers'
    while True:
        done, _status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        ctl = (cpu_of(me) or ("", ctl))[1]
        peaks[me] = max(peaks.get(me, 0.0), hwm_mb(me))
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me or pid in foreign:
                continue
            if pid not in readers and not marked(pid, marker):
                foreign.add(pid)
                continue
            seen = cpu_of(pid)
            if seen is None:
                continue
            if seen[0] == me:  # the fork server: the readers are its children
                foreign.add(pid)
                continue
            if first is None:
                first = ctl
            readers[pid] = seen[1]
            ended[pid] = ctl
            peaks[pid] = max(peaks.get(pid, 0.0), hwm_mb(pid))
        time.sleep(0.01)
    total_ctl = usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - started
    busiest = max(readers.values(), default=0.0)
    pre = first or 0.0
    post = total_ctl - max(ended.values(), default=total_ctl)
    wipe(target)
    return {
        "pre": pre,
        "busiest": busiest,
        "post": post,
        "critical": pre + busiest + post,
        "controller": total_ctl,
        "total": total_ctl + sum(readers.values()),
        "wall": wall,
        "rss": sum(peaks.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--target", required=True, help="an empty directory (emptied after each run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("checkouts", nargs="+")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in args.checkouts}
    for checkout in args.checkouts:  # each as installed: with PYTHONDONTWRITEBYTECODE set
        # (as here), one never compiled compiles every module it imports at every run
        src = os.path.join(os.path.abspath(checkout), "src")
        subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True)
    for _ in range(args.rounds):
        for checkout in args.checkouts:
            r = one_run(os.path.abspath(checkout), args.catalog, args.target)
            runs[checkout].append(r)
            print(
                f"{checkout}: pre {r['pre']:.2f} busiest reader {r['busiest']:.2f} "
                f"post {r['post']:.2f} critical {r['critical']:.2f} controller "
                f"{r['controller']:.2f} total {r['total']:.2f} "
                f"CPU s; wall {r['wall']:.2f} s; peak RSS {r['rss']:.0f} MB; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    for checkout, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"{checkout}: median pre {med['pre']:.2f} busiest {med['busiest']:.2f} post "
            f"{med['post']:.2f} critical {med['critical']:.2f} controller {med['controller']:.2f} "
            f"total {med['total']:.2f}; peak RSS {med['rss']:.0f} MB"
        )


if __name__ == "__main__":
    main()
