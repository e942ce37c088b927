"""Versions of parbackup side by side on a million small files, in alternating rounds.

    sudo .venv/bin/python bench/million_pairs.py --work /tmp/NAME --rounds 3 \\
        old=/tmp/NAME/old/src new=src

Builds bench/scale.py's tree of ``--files`` small files once (its own tmpfs under
``--work``), then each round runs, version after version: the in-process scan and plan
(timed apart, as bench/scale.py's ``plan_timings`` does, in a child process with that
version's code) and the 2-device backup (fresh tmpfs devices and catalog, CPU of the
whole process tree from a cgroup; each device's busy seconds over the seconds until it
finished, from the report); then ``tar -cf`` of the tree onto one device. A change
of load hits every version of a round alike. Prints each run, then per version the
medians and the median per-round ratios to the first version's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time

from common import PY, Measured, conditions, run, tmpfs
from scale import make_files

# Not scale.plan_timings itself: the child runs old versions too, whose Entries may lack
# what that function also reports (nbytes); only scan, open_devices and make_plan.
TIMINGS = """
import json, sys, time
from parbackup.engine.devices import close_all, open_devices
from parbackup.engine.prepare import make_plan, scan, source_specs
from parbackup.engine.report import BackupOptions
src, devs = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
entries = scan(source_specs([src]), [])
t1 = time.perf_counter()
alive, _ = open_devices(devs, create_labels=False, require_label=False)
t2 = time.perf_counter()
plan = make_plan(entries, [d.space for d in alive], BackupOptions())
t3 = time.perf_counter()
close_all(alive)
print(json.dumps({"scan": t1 - t0, "plan": t3 - t2, "items": len(plan)}))
"""


def timings(code: str, tree: str, devs: list[str]) -> dict:
    """Scan and plan of ``tree`` with the code in ``code``, timed in a child process."""
    out = subprocess.run(
        [PY, "-c", TIMINGS, tree, *devs],
        env={"PYTHONPATH": code, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def backup(code: str, tree: str, devs: list[str], catalog: str, name: str) -> Measured:
    """``parbackup backup TREE -d DEV1 -d DEV2 --json`` with the code in ``code``."""
    argv = [PY, "-m", "parbackup", "backup", tree]
    for d in devs:
        argv += ["-d", d]
    m = run(name, [*argv, "--json"], env={"PYTHONPATH": code, "PARBACKUP_CATALOG": catalog})
    assert json.loads(m.out)["status"] == "complete", m.out[-500:]
    return m


def busy(m: Measured) -> str:
    """Each device's busy seconds over its end (the report's ``seconds`` and ``finished``,
    both counted from the dispatcher's start): how long its mover worked, not waited."""
    devices = json.loads(m.out)["devices"]
    return " ".join(f"{d.get('seconds', 0):.1f}/{d.get('finished', 0):.1f}" for d in devices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="+", help="NAME=SRC_DIR (the first is the base)")
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", help="an existing tree to use instead of building one")
    args = ap.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    for _name, code in versions:  # compiled once, as an installation has it
        subprocess.run([PY, "-m", "compileall", "-q", code], check=True, capture_output=True)
    w = args.work
    rows: dict[str, list[tuple[dict, Measured]]] = {n: [] for n, _ in versions}
    tars: list[Measured] = []
    with contextlib.ExitStack() as outer:
        tree = args.tree
        if tree is None:
            tree = outer.enter_context(tmpfs(f"{w}/tree", "8G"))
            started = time.perf_counter()
            make_files(tree, args.files)
            print(f"built {args.files} files in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
        print(conditions(), flush=True)
        for r in range(args.rounds):
            for name, code in versions:
                with contextlib.ExitStack() as stack:
                    devs = [stack.enter_context(tmpfs(f"{w}/dev{k}", "4G")) for k in (1, 2)]
                    state = stack.enter_context(tmpfs(f"{w}/state", "2G"))
                    t = timings(code, tree, devs)
                    m = backup(code, tree, devs, f"{state}/c.sqlite", name)
                rows[name].append((t, m))
                print(f"round {r} {name}: scan {t['scan']:.2f} plan {t['plan']:.2f}"
                      f" backup wall {m.wall:.2f} cpu {m.cpu:.2f} rss {m.memory}"
                      f" devices busy/finished {busy(m)}", flush=True)  # fmt: skip
            with tmpfs(f"{w}/dev0", "4G") as dev:
                t = run("tar", ["tar", "-cf", f"{dev}/t.tar", "-C", tree, "."])
            tars.append(t)
            print(f"round {r} tar: wall {t.wall:.2f} cpu {t.cpu:.2f}  {conditions()}", flush=True)
    med = statistics.median
    base = versions[0][0]
    print("\nmedians over the rounds (ratios: median of the per-round ratios)")
    print(f"| version | scan | plan | backup wall | backup CPU | wall / tar | wall / {base}'s |"
          f" CPU / {base}'s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, got in rows.items():
        walls = [m.wall / x.wall for (_, m), (_, x) in zip(got, rows[base], strict=True)]
        cpus = [m.cpu / x.cpu for (_, m), (_, x) in zip(got, rows[base], strict=True)]
        scan, plan = med(t["scan"] for t, _ in got), med(t["plan"] for t, _ in got)
        print(
            f"| {name} | {scan:.2f} | {plan:.2f}"
            f" | {med(m.wall for _, m in got):.2f} | {med(m.cpu for _, m in got):.2f}"
            f" | {med(m.wall / t.wall for (_, m), t in zip(got, tars, strict=True)):.2f}x"
            f" | {med(walls):.3f} | {med(cpus):.3f} |"
        )
        if name != base:
            print(f"  per round, {name} / {base}: wall "
                  + " ".join(f"{v:.3f}" for v in walls) + ", CPU "
                  + " ".join(f"{v:.3f}" for v in cpus))  # fmt: skip
    print(f"\ntar -cf: median wall {med(t.wall for t in tars):.2f} s,"
          f" CPU {med(t.cpu for t in tars):.2f} s")  # fmt: skip
    # The VM's memory only adds time, run by run: each variant's best round is its time
    # with memory fast (bench/pairs.py ``best_of_rounds``), the ratios of those a fast hour's.
    best = min(t.wall for t in tars)
    print(f"best of the rounds: tar -cf wall {best:.2f} s; "
          + "; ".join(f"{name} wall {min(m.wall for _, m in got):.2f} s,"
                      f" {min(m.wall for _, m in got) / best:.2f}x of tar"
                      for name, got in rows.items()))  # fmt: skip


if __name__ == "__main__":
    main()
