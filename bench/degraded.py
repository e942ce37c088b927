"""Restore with a parity device missing against the healthy restore, several trees, in
alternating rounds (issue 12's "≥ 0.7x the throughput"), walls and CPU seconds.

    .venv/bin/python bench/degraded.py --work /tmp/NAME/dg --size 512 --rounds 9 \
        --tree new=src --tree old=/path/to/older/src

One ``--parity 1`` backup on 4 tmpfs devices (16 random files, written by the first
tree), then in every round each tree restores it healthy and with data device d1
missing, in an order that turns round every round (bench/common.py ``alternating``), so
load and drift hit every kind alike. A round's ratio is healthy wall / degraded wall of
the same tree in the same round; CPU seconds are the whole process tree's (cgroup),
steadier than the walls on a shared machine. Every restore is checked against the
source's digests. ``--nice -10`` runs the restores at a higher priority than the other
work on the machine, so that its load weighs less on their walls (what a restore's own
parallelism gives on 2 cores shows better).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys

from common import (
    Measured,
    alternating,
    conditions,
    file_digests,
    parbackup_argv,
    random_file,
    run,
    tmpfs,
    wipe,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/pbdegraded")
    ap.add_argument("--size", type=int, default=512, help="MiB of source data")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tree", action="append", default=[], help="NAME=SRC (repeatable)")
    ap.add_argument("--healthy", choices=("all", "first"), default="all",
                    help="restore healthy with every tree, or with the first only")  # fmt: skip
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of the restores (-10: the load weighs less)")  # fmt: skip
    args = ap.parse_args()
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    trees = dict(t.split("=", 1) for t in args.tree) or {"new": "src"}
    trees = {n: os.path.abspath(p) for n, p in trees.items()}
    for path in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", path], check=True)
    print(conditions())
    w, size = args.work, f"{args.size + args.size // 2 + 256}M"
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(tmpfs(f"{w}/src", size))
        devs = [stack.enter_context(tmpfs(f"{w}/d{i}", size)) for i in range(4)]
        state = stack.enter_context(tmpfs(f"{w}/state", "256M"))
        target = stack.enter_context(tmpfs(f"{w}/restore", size))
        for i in range(16):
            random_file(os.path.join(src, f"f{i:02d}.bin"), (args.size << 20) // 16, seed=i)
        want = file_digests(src)
        first = next(iter(trees))
        env = {"PARBACKUP_CATALOG": os.path.join(state, "catalog.sqlite")}
        argv = parbackup_argv("backup", src, *[a for d in devs for a in ("-d", d)], "--parity", "1")
        run("backup", argv, env={**env, "PYTHONPATH": trees[first]})
        wipe(src)
        kinds = [(n, "healthy") for n in trees if args.healthy == "all" or n == first]
        kinds += [(n, "missing") for n in trees]
        got: dict[tuple[str, str], list[Measured]] = {k: [] for k in kinds}
        for r, order in alternating(kinds, args.rounds):
            line = []
            for name, how in order:
                wipe(target)
                away = os.path.join(devs[1], "sets")
                if how == "missing":
                    os.rename(away, away + ".away")
                try:
                    m = run(f"{name} {how}", prefix + parbackup_argv("restore", "-t", target),
                            env={**env, "PYTHONPATH": trees[name]})  # fmt: skip
                finally:
                    if how == "missing":
                        os.rename(away + ".away", away)
                if file_digests(os.path.join(target, src.lstrip("/"))) != want:
                    raise SystemExit(f"{name} {how}: the restore differs from the source")
                got[(name, how)].append(m)
                line.append(f"{name} {how} {m.wall:.2f} s / {m.cpu:.2f} CPU s")
            print(f"round {r + 1}: " + ", ".join(line) + f"; load {os.getloadavg()[0]:.1f}")
        print(conditions())
        for k, ms in got.items():
            walls, cpus = [m.wall for m in ms], [m.cpu for m in ms]
            print(
                f"{k[0]} {k[1]}: wall median {statistics.median(walls):.3f} s"
                f" ({min(walls):.2f}-{max(walls):.2f}), CPU median {statistics.median(cpus):.3f} s"
                f" ({min(cpus):.2f}-{max(cpus):.2f}), peak RSS {max(m.rss_mb for m in ms):.0f} MB"
            )
        base = got[(first, "healthy")]
        for name in trees:
            healthy = got.get((name, "healthy"), base)
            missing = got[(name, "missing")]
            ratios = [h.wall / m.wall for h, m in zip(healthy, missing, strict=True)]
            cpu = [m.cpu / h.cpu for h, m in zip(healthy, missing, strict=True)]
            print(
                f"{name}: throughput missing / healthy per round "
                f"{' '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f};"
                f" CPU missing / healthy median {statistics.median(cpu):.2f}"
            )
        if len(trees) > 1:
            ref = got[(first, "missing")]
            for name in list(trees)[1:]:
                other = got[(name, "missing")]
                w = [a.wall / b.wall for a, b in zip(ref, other, strict=True)]
                c = [a.cpu / b.cpu for a, b in zip(ref, other, strict=True)]
                print(
                    f"missing: {first} / {name} per round, wall {' '.join(f'{x:.2f}' for x in w)}"
                    f" (median {statistics.median(w):.2f}); CPU {' '.join(f'{x:.2f}' for x in c)}"
                    f" (median {statistics.median(c):.2f})"
                )


if __name__ == "__main__":
    main()
