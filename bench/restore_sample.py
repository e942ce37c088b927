"""Restore against ``tar -xf`` on a sample of bench/local.py's tree, two checkouts
alternating, in under 4 GB of tmpfs.

    sudo .venv/bin/python bench/restore_sample.py --work /tmp/NAME/rs --rounds 4 \\
        --base /path/to/a/checkout/of/main

The tree is every entry of bench/local.py's three directories (the Python library,
/usr/share/doc, /usr/lib/x86_64-linux-gnu) whose path's CRC32 falls in ``--percent``
of 100 (37 by default: about 1.2 GB and 29k entries, the same mix of sizes and depths as
the whole), plus two 192 MiB random files, on its own tmpfs. It is backed up onto two
tmpfs devices, one restore with this checkout is checked against it, then it is written
into a tar file on a third and unmounted (never more than about 3.6 GB held at once).
Each round restores with ``--base`` and with this checkout (their order alternating)
and runs ``tar -xf``, the target wiped between runs; wall, CPU seconds of the whole
process tree (a cgroup) and peak RSS as bench/common.py takes them. Prints each run,
the medians and the per-round ratios.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import sysconfig
import zlib

from common import (
    SRC,
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    same_tree,
    tmpfs,
    wipe,
)


def build_sample(src: str, percent: int) -> None:
    """Copy the sampled entries (and the directories above them), then the random files."""
    dirs = [sysconfig.get_paths()["stdlib"], "/usr/share/doc", "/usr/lib/x86_64-linux-gnu"]
    for i, d in enumerate(dirs):
        d = d.rstrip("/")
        keep = []
        for root, subdirs, files in os.walk(d):
            links = [s for s in subdirs if os.path.islink(os.path.join(root, s))]
            for name in files + links:
                path = os.path.join(root, name)
                if zlib.crc32(os.fsencode(path)) % 100 < percent:
                    keep.append(os.path.relpath(path, d))
        dest = os.path.join(src, f"t{i}-{os.path.basename(d)}")
        os.makedirs(dest)
        listing = os.path.join(src, "list")
        with open(listing, "w") as fh:
            fh.write("\n".join(keep) + "\n")
        pipe = f"tar -cf - -C {d} -T {listing} | tar -xpf - -C {dest}"
        subprocess.run(["sh", "-c", pipe], check=True)
        os.unlink(listing)
    os.makedirs(os.path.join(src, "random"))
    for i in range(2):
        random_file(os.path.join(src, "random", f"r{i}.bin"), 192 << 20, seed=i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go (your own)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--percent", type=int, default=37, help="share of the entries kept")
    ap.add_argument("--base", default="", help="another checkout to compare with (its src/)")
    args = ap.parse_args()
    w = args.work
    checkouts = {"this": str(SRC)}
    if args.base:
        checkouts["base"] = os.path.join(os.path.abspath(args.base), "src")
        compileall.compile_dir(checkouts["base"], quiet=2)
    with (
        tmpfs(f"{w}/dev1", "1500M") as dev1,
        tmpfs(f"{w}/dev2", "1500M") as dev2,
        tmpfs(f"{w}/tar", "1500M") as tardev,
        tmpfs(f"{w}/state", "200M") as state,
        tmpfs(f"{w}/restore", "1500M") as target,
    ):
        env = parbackup_env(os.path.join(state, "catalog.sqlite"))
        restore = parbackup_argv("restore", "-t", target, "--json")
        with tmpfs(f"{w}/src", "1500M") as src:
            build_sample(src, args.percent)
            entries = sum(len(d) + len(f) for _, d, f in os.walk(src))
            print(f"tree: {entries} entries", file=sys.stderr)
            run("backup", parbackup_argv("backup", src, "-d", dev1, "-d", dev2), env=env)
            run("restore (check)", restore, env=env)
            if not same_tree(src, os.path.join(target, src.lstrip("/"))):
                raise SystemExit("parbackup restore differs from the source")
            wipe(target)  # before the tar file: never the tree, both copies and the tar
            run("tar -cf", ["tar", "-cf", f"{tardev}/t.tar", "-C", src, "."])
        runs: dict[str, list] = {who: [] for who in [*checkouts, "tar"]}
        for i in range(args.rounds):
            order = list(checkouts) if i % 2 == 0 else list(reversed(checkouts))
            for who in [*order, "tar"]:
                if who == "tar":
                    m = run("tar -xf", ["tar", "-xf", f"{tardev}/t.tar", "-C", target])
                else:
                    m = run(who, restore, env={**env, "PYTHONPATH": checkouts[who]})
                wipe(target)
                runs[who].append(m)
                print(
                    f"round {i + 1} {who}: wall {m.wall:.2f} s, CPU {m.cpu:.2f} s, "
                    f"RSS {m.rss_mb:.0f} MB; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    for who, ms in runs.items():
        print(
            f"{who}: median wall {statistics.median(m.wall for m in ms):.2f} s, "
            f"CPU {statistics.median(m.cpu for m in ms):.2f} s"
        )
    for who in checkouts:
        walls = [m.wall / t.wall for m, t in zip(runs[who], runs["tar"], strict=True)]
        cpus = [m.cpu / t.cpu for m, t in zip(runs[who], runs["tar"], strict=True)]
        print(
            f"{who} / tar -xf: wall median {statistics.median(walls):.2f}, "
            f"CPU median {statistics.median(cpus):.2f}"
        )
    if args.base:
        walls = [b.wall / t.wall for b, t in zip(runs["base"], runs["this"], strict=True)]
        cpus = [b.cpu / t.cpu for b, t in zip(runs["base"], runs["this"], strict=True)]
        print(f"base / this, per round: wall {[round(x, 2) for x in walls]}, "
              f"CPU {[round(x, 2) for x in cpus]}")  # fmt: skip


if __name__ == "__main__":
    main()
