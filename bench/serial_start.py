"""The controller's fixed serial cost, versions alternated: a backup of a tiny tree.

    .venv/bin/python bench/serial_start.py --work /tmp/NAME/start --rounds 12 \\
        base=/tmp/NAME/base/src new=src

A backup of five 10 kB files onto two directories spends almost all of its controller
time on what every backup pays once, whatever its size: the interpreter and its
imports, the catalog and the run lock, the movers' start, labels, the set's begin and
end and the catalog copy. Each round runs every version once (a fresh catalog and fresh
devices under ``--work``); the controller's own CPU seconds are read from its ``-vv``
phase lines (``time.process_time``, its own process only), so the movers and the load
of other processes count less than in a wall. Prints, per version, the median and the
minimum over the rounds at "movers started" (imports, catalog open: the scan starts
then), "set begun" and "catalog copied". Compile each version first (``python -m
compileall SRC``): a source tree without ``__pycache__`` pays the compilation at every
run when PYTHONDONTWRITEBYTECODE is set.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess

from common import PY

PHASES = ("movers started", "set begun", "catalog copied")


def one_run(src: str, work: str) -> dict[str, float]:
    """One backup of the tiny tree with the code in ``src``: phase -> controller CPU s."""
    tree, devs = os.path.join(work, "tree"), [os.path.join(work, f"d{k}") for k in (0, 1)]
    for d in devs:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    catalog = os.path.join(work, "catalog.sqlite")
    for path in (catalog, catalog + "-wal", catalog + "-shm"):
        if os.path.exists(path):
            os.unlink(path)
    env = {**os.environ, "PYTHONPATH": src, "PARBACKUP_CATALOG": catalog}
    argv = [PY, "-m", "parbackup", "-vv", "backup", tree, "-d", devs[0], "-d", devs[1], "--json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"backup failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    got = {}
    for line in proc.stderr.splitlines():
        match = re.search(r"CPU ([0-9.]+) s\): (.*)$", line)
        if match and match.group(2) in PHASES:
            got[match.group(2)] = float(match.group(1))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="+", metavar="NAME=SRC", help="the first is the base")
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    tree = os.path.join(args.work, "tree")
    os.makedirs(tree, exist_ok=True)
    for k in range(5):
        with open(os.path.join(tree, f"f{k}"), "wb") as fh:
            fh.write(os.urandom(10_000))
    versions = [v.split("=", 1) for v in args.versions]
    got: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PHASES} for name, _ in versions}
    for _ in range(args.rounds):
        for name, src in versions:
            for phase, cpu in one_run(src, args.work).items():
                got[name][phase].append(cpu)
    print(f"controller CPU ms, {args.rounds} rounds: median (min)")
    print("| version | " + " | ".join(PHASES) + " |")
    print("| --- |" + " ---: |" * len(PHASES))
    for name, phases in got.items():
        cells = (
            f"{statistics.median(v) * 1000:.0f} ({min(v) * 1000:.0f})" for v in phases.values()
        )
        print(f"| {name} | " + " | ".join(cells) + " |")
    with open("/proc/loadavg") as fh:
        print("load average:", " ".join(fh.read().split()[:3]))


if __name__ == "__main__":
    main()
