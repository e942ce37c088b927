"""Benchmark: n devices each held to a rate R with ``?limit=R`` — does the aggregate
reach n x R? (issue 10: n devices really n times as fast, until the machine's limit.)

    sudo .venv/bin/python bench/throttled.py                  # n = 2, 4, 8 at R = 20 MB/s
    sudo .venv/bin/python bench/throttled.py --rate 10M --seconds 5 --devices 2,4

For each n, a source tree of about ``n x R x seconds`` bytes (a few large random files
and a thousand small ones) is backed up onto n tmpfs devices, each ``?limit=R``. The
figure is the aggregate rate over the backup's wall time (start-up and catalog copy
included) against n x R, measured in this run. n x R stays well under what this machine
can move (several hundred MB/s), so the limits, not the CPU, should set the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import conditions, parbackup_argv, parbackup_env, random_file, run, table, tmpfs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from parbackup.devices.url import parse_size


def build(src: str, total: int) -> int:
    """Large random files plus 1000 small ones, ``total`` bytes in all."""
    small = os.path.join(src, "small")
    os.makedirs(small)
    blob = os.urandom(4096)
    for i in range(1000):
        with open(os.path.join(small, f"s{i:04d}"), "wb") as fh:
            fh.write(blob[: (i * 37) % 4096])
    left = total - sum((i * 37) % 4096 for i in range(1000))
    big = max(1, left // (64 << 20))
    for i in range(big):
        random_file(os.path.join(src, f"big{i}.bin"), left // big, seed=i)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", default="20M", help="R, each device's limit")
    ap.add_argument("--seconds", type=float, default=10.0, help="ideal duration of each run")
    ap.add_argument("--devices", default="2,4,8")
    ap.add_argument("--work", default="/tmp/pbthrottle")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rate = parse_size(args.rate)
    rows, doc = [], {}
    for n in [int(x) for x in args.devices.split(",")]:
        total = int(n * rate * args.seconds)
        size = f"{total // (1 << 20) + 256}M"
        with tmpfs(f"{args.work}/src", size) as src, tmpfs(f"{args.work}/state", "1G") as st:
            build(src, total)
            devs = []
            try:
                for i in range(n):
                    d = f"{args.work}/dev{i}"
                    os.makedirs(d, exist_ok=True)
                    devs.append(d)
                argv = ["backup", src, "--json"]
                for d in devs:
                    argv += ["-d", f"{d}?limit={args.rate}"]
                m = run(f"{n} devices", parbackup_argv(*argv), env=parbackup_env(f"{st}/c"))
                report = json.loads(m.out)
                assert report["status"] == "complete", report
                moved = report["bytes"]
            finally:
                for d in devs:
                    os.system(f"rm -rf {d}")
        ideal = n * rate
        got = moved / m.wall
        rows.append([str(n), f"{ideal / 1e6:.0f}", f"{moved / 1e6:.0f}", f"{m.wall:.2f}",
                     f"{got / 1e6:.1f}", f"{got / ideal:.3f}"])  # fmt: skip
        doc[n] = {"ideal": ideal, "bytes": moved, "wall": m.wall, "ratio": got / ideal}
    print(f"\nEach device ?limit={args.rate}. {conditions()}\n")
    print(table(["n", "n x R MB/s", "MB", "wall s", "aggregate MB/s", "aggregate / (n x R)"],
                rows))  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)


if __name__ == "__main__":
    main()
