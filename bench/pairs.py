"""Two versions of parbackup in alternating rounds: 1 device, 2 devices, and ``tar -cf``.

    sudo .venv/bin/python bench/pairs.py TREE --work /tmp/NAME/pairs --rounds 5 \\
        old=/tmp/NAME/old/src new=src

Each round runs, one after the other, every version's backup of TREE onto one device,
then onto two, then ``tar -cf`` of TREE onto one device (every device a fresh tmpfs
under ``--work``, every catalog fresh), so a change of load hits every variant of a
round alike. The versions run in reverse order every other round: on this VM the second
2-device run of a round used more CPU than the first in 11 of 11 rounds whichever code
it ran (session 16, docs/BENCHMARKS.md), so use an even ``--rounds``. Wall time, CPU
seconds of the whole process tree (cgroup, bench/common.py).
Prints each run, then per version the medians over the rounds of: wall, CPU, 2 devices
over 1 (wall), wall / tar's wall, CPU / tar's CPU; and the median per-round ratio of
each version's 2-device wall to the first version's. Then the same figures from each
variant's best round (``best_of_rounds``): what an hour of fast memory gives.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess

from common import PY, Measured, conditions, run, tmpfs


def backup(src: str, tree: str, devices: list[str], catalog: str, name: str) -> Measured:
    """``parbackup backup TREE -d DEV... --json`` with the code in ``src``, measured."""
    argv = [PY, "-m", "parbackup", "backup", tree]
    for d in devices:
        argv += ["-d", d]
    argv += ["--json"]
    return run(name, argv, env={"PYTHONPATH": src, "PARBACKUP_CATALOG": catalog})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("versions", nargs="+", help="NAME=SRC_DIR (the first is the base)")
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="4G", help="size of each device's tmpfs")
    args = ap.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    for _name, src in versions:  # compiled once, as an installation has it
        subprocess.run([PY, "-m", "compileall", "-q", src], check=True, capture_output=True)
    got: dict[str, list[tuple[Measured, Measured, Measured]]] = {n: [] for n, _ in versions}
    tars: list[Measured] = []
    print(conditions(), flush=True)
    w = args.work
    for r in range(args.rounds):
        for n_dev in (1, 2):
            for name, src in versions if r % 2 == 0 else versions[::-1]:
                with contextlib.ExitStack() as stack:
                    devs = [
                        stack.enter_context(tmpfs(f"{w}/dev{k}", args.size)) for k in range(n_dev)
                    ]
                    state = stack.enter_context(tmpfs(f"{w}/state", "1G"))
                    m = backup(src, args.tree, devs, f"{state}/c.sqlite", f"{name} {n_dev}")
                print(f"round {r} {name} {n_dev} device(s): wall {m.wall:.2f} cpu {m.cpu:.2f}",
                      flush=True)  # fmt: skip
                if n_dev == 1:
                    got[name].append((m, m, m))
                else:
                    one = got[name][-1][0]
                    got[name][-1] = (one, m, m)
        with tmpfs(f"{w}/dev0", args.size) as dev:
            t = run("tar", ["tar", "-cf", f"{dev}/t.tar", "-C", args.tree, "."])
        tars.append(t)
        print(f"round {r} tar: wall {t.wall:.2f} cpu {t.cpu:.2f}", flush=True)
        print(f"  {conditions()}", flush=True)
    base = versions[0][0]
    print("\nmedians over the rounds (ratios: median of the per-round ratios)")
    print("| version | 1 dev wall | 2 dev wall | 2 dev CPU | 2 over 1 | wall / tar | CPU / tar |"
          f" 2 dev wall / {base}'s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in got.items():
        med = statistics.median
        ones = [a.wall for a, _b, _c in runs]
        twos = [b.wall for _a, b, _c in runs]
        cpus = [b.cpu for _a, b, _c in runs]
        over = med([a.wall / b.wall for a, b, _c in runs])
        wall_tar = med([b.wall / t.wall for (_a, b, _c), t in zip(runs, tars, strict=True)])
        cpu_tar = med([b.cpu / t.cpu for (_a, b, _c), t in zip(runs, tars, strict=True)])
        vs = med([b.wall / rb.wall for (_a, b, _c), (_x, rb, _y) in zip(runs, got[base],
                                                                         strict=True)])  # fmt: skip
        print(f"| {name} | {med(ones):.2f} | {med(twos):.2f} | {med(cpus):.2f} | {over:.2f}x |"
              f" {wall_tar:.2f}x | {cpu_tar:.2f}x | {vs:.3f} |")  # fmt: skip
    print(f"\ntar -cf: median wall {statistics.median(t.wall for t in tars):.2f} s,"
          f" CPU {statistics.median(t.cpu for t in tars):.2f} s")  # fmt: skip
    best_of_rounds(got, tars)


def best_of_rounds(got: dict[str, list[tuple[Measured, Measured, Measured]]],
                   tars: list[Measured]) -> None:  # fmt: skip
    """Each figure's best (least) over the rounds, and the ratios of those bests.

    This VM's memory only ever adds time (a fresh tmpfs page can cost the host a fault:
    ``tar -cf`` of the same tree took 1.3-4.3 s within one run), and it hits runs one by
    one, not whole rounds, so a per-round ratio can pair a slowed run with a fast one.
    The least time of each variant over the rounds is its time with memory fast: the
    ratios of those are what a fast hour gives (session 18's fast hour: tar 1.6 s).
    """
    t_wall, t_cpu = min(t.wall for t in tars), min(t.cpu for t in tars)
    print(f"\nbest of the rounds (least time of each; tar -cf wall {t_wall:.2f} s,"
          f" CPU {t_cpu:.2f} s)")  # fmt: skip
    print("| version | 1 dev wall | 2 dev wall | 2 dev CPU | 2 over 1 | wall / tar | CPU / tar |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in got.items():
        one = min(a.wall for a, _b, _c in runs)
        two = min(b.wall for _a, b, _c in runs)
        cpu = min(b.cpu for _a, b, _c in runs)
        print(f"| {name} | {one:.2f} | {two:.2f} | {cpu:.2f} | {one / two:.2f}x |"
              f" {two / t_wall:.2f}x | {cpu / t_cpu:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
