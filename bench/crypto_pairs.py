#!/usr/bin/env python3
"""Plain against encrypted backups in alternating rounds, CPU of the whole process tree.

Each round backs the same tree up once per variant, onto two fresh directories, one
variant after the other, so a change of load hits every variant alike. Wall time is
taken, and the CPU time of the whole process tree from a cpuacct cgroup made for the
run (movers included, however they were started), which stays meaningful on a machine
other work shares; and the bytes each device stores. A variant is
``NAME=SRC_DIR:OPTIONS`` (SRC_DIR: a parbackup ``src`` tree, to compare two versions of
the code).

    sudo .venv/bin/python bench/crypto_pairs.py TREE --rounds 6 \\
        plain=src: enc=src:--encrypt old=/tmp/old/src:--encrypt

Needs root (cgroup v1 cpuacct at /sys/fs/cgroup/cpuacct).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def stored(path: Path) -> int:
    """Bytes in the files under ``path`` (what a device holds)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def one_run(
    tree: str, src: str, options: list[str], work: Path, tag: str
) -> tuple[float, float, int, int]:
    """(wall s, CPU s, bytes stored on each of the two devices) of one backup of ``tree``
    with the code in ``src``."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "d1").mkdir(parents=True)
    (work / "d2").mkdir()
    env = {**os.environ, "PYTHONPATH": src, "PARBACKUP_PASSWORD": "bench passphrase"}
    argv = [sys.executable, "-m", "parbackup", "backup", tree, "-d", str(work / "d1"),
            "-d", str(work / "d2"), "--catalog", str(work / "cat.sqlite"), "--json",
            *options]  # fmt: skip
    group = CPUACCT / f"parbackup-bench-{os.getpid()}-{tag}"
    group.mkdir()
    try:
        started = time.monotonic()
        proc = subprocess.run(
            ["sh", "-c", f'echo $$ > {group}/tasks && exec "$@"', "sh", *argv],
            env=env,
            capture_output=True,
        )
        wall = time.monotonic() - started
        cpu = int((group / "cpuacct.usage").read_text()) / 1e9
    finally:
        group.rmdir()
    if proc.returncode not in (0, 3):
        raise SystemExit(
            f"{tag}: backup failed (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}"
        )
    return wall, cpu, stored(work / "d1"), stored(work / "d2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("variants", nargs="+", help="NAME=SRC_DIR:OPTIONS (the first is the base)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    variants = []
    for text in args.variants:
        name, _, rest = text.partition("=")
        src, _, opts = rest.partition(":")
        src = str((ROOT / src).resolve()) if not os.path.isabs(src) else src
        variants.append((name, src, opts.split()))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    sizes: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="parbackup-pairs-") as tmp:
        for r in range(args.rounds):
            for name, src, opts in variants:
                wall, cpu, a, b = one_run(args.tree, src, opts, Path(tmp) / "run", f"{name}-{r}")
                results[name].append((wall, cpu))
                sizes[name] = (a, b)
                print(f"round {r} {name:12} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                      f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)  # fmt: skip
    base = variants[0][0]
    for name, _, _ in variants:
        runs = results[name]
        line = (f"{name:12} median wall {statistics.median(w for w, _ in runs):6.2f} s, "
                f"cpu {statistics.median(c for _, c in runs):6.2f} s, stored "
                f"{sum(sizes[name]) / 1e6:.0f} MB, devices max/min "
                f"{max(sizes[name]) / max(1, min(sizes[name])):.3f}")  # fmt: skip
        if name != base:
            walls = [a[0] / b[0] for a, b in zip(runs, results[base], strict=True)]
            cpus = [a[1] / b[1] for a, b in zip(runs, results[base], strict=True)]
            line += (f"; / {base}: wall {statistics.median(walls):.2f}x, "
                     f"cpu {statistics.median(cpus):.2f}x (medians of the rounds)")  # fmt: skip
        print(line)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
