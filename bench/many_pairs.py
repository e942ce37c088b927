"""Many small files: whole backups of two checkouts in alternating pairs, and tar.

    sudo .venv/bin/python bench/many_pairs.py --work /tmp/NAME/pairs --files 400000 \\
        --old /path/to/old/checkout/src --rounds 3

Builds a tree of ``--files`` files of 0-1023 bytes (bench/scale.py's ``make_files``) on
its own tmpfs (about 4 KiB of memory a file: 400,000 files take 1.6 GB), then, each
round, backs it up with the old and the new checkout (which goes first alternates), each
onto 2 fresh tmpfs devices with a fresh tmpfs catalog as bench/scale.py does, and runs
``tar -cf`` of the tree onto a fresh tmpfs. Prints one line a run: wall and CPU seconds
(every process, from a cgroup: bench/common.py's ``run``) and the load average, and a
median line. For a machine shared with other work, where one run's wall says little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from common import PY, SRC, run, tmpfs
from scale import make_files


def one_run(name: str, tree: str, work: str, src: str) -> dict:
    """One backup (or ``tar -cf`` when ``name`` is "tar") onto fresh tmpfs mounts."""
    with (
        tmpfs(f"{work}/dev1", "1G") as d1,
        tmpfs(f"{work}/dev2", "1G") as d2,
        tmpfs(f"{work}/state", "600M") as state,
    ):
        load = os.getloadavg()[0]
        if name == "tar":
            m = run("tar -cf", ["tar", "-cf", f"{d1}/t.tar", "-C", tree, "."])
        else:
            env = {"PYTHONPATH": src, "PARBACKUP_CATALOG": f"{state}/catalog.sqlite"}
            argv = [PY, "-m", "parbackup", "backup", tree, "-d", d1, "-d", d2, "--json"]
            m = run(name, argv, env=env)
            status = json.loads(m.out)["status"]
            assert status == "complete", status
    return {"name": name, "wall": round(m.wall, 2), "cpu": round(m.cpu, 2), "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go")
    ap.add_argument("--files", type=int, default=400_000)
    ap.add_argument("--old", required=True, help="the src directory of the other checkout")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    versions = {"old": args.old, "new": str(SRC)}
    rows: list[dict] = []
    tree_size = f"{(args.files * 4200) // (1 << 20) + 64}M"
    with tmpfs(f"{args.work}/tree", tree_size) as tree:
        started = time.perf_counter()
        make_files(tree, args.files)
        print(f"{args.files} files made in {time.perf_counter() - started:.1f} s", flush=True)
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for name in [*order, "tar"]:
                row = {"round": r, **one_run(name, tree, args.work, versions.get(name, ""))}
                print(f"round {r} {name}: CPU {row['cpu']} s, wall {row['wall']} s, "
                      f"load {row['load']:.1f}", flush=True)  # fmt: skip
                rows.append(row)
    for name in ("old", "new", "tar"):
        mine = [r for r in rows if r["name"] == name]
        print(f"median {name}: CPU {statistics.median(r['cpu'] for r in mine):.2f} s, "
              f"wall {statistics.median(r['wall'] for r in mine):.2f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
