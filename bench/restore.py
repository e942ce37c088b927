"""Restore speed: ``parbackup restore`` from 2 devices against ``tar -xf`` from one.

    sudo .venv/bin/python bench/restore.py              # ~1 GB tree, 3 alternating pairs
    sudo .venv/bin/python bench/restore.py --pairs 5
    sudo .venv/bin/python bench/restore.py --base /tmp/main-checkout   # before/after
    sudo .venv/bin/python bench/restore.py --local-tree     # bench/local.py's tree

With ``--base`` (another checkout of parbackup, e.g. ``git worktree add``), each round
also restores with that checkout's code, so before and after alternate in one run.

The tree is /usr/share/doc and /usr/lib/x86_64-linux-gnu plus one 256 MiB random file,
on its own tmpfs; each device, the tar file's device and the restore target are their
own tmpfs too. The tree is backed up once; then parbackup restore and tar -xf run in
alternating pairs, the target wiped between runs. Prints each run and the median of the
wall-time ratios (parbackup / tar).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys

from common import (
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    same_tree,
    tmpfs,
    tree_stats,
    wipe,
)
from local import build_tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/pbrestore", help="where the tmpfs mounts go")
    ap.add_argument("--pairs", type=int, default=3, help="alternating runs of each tool")
    ap.add_argument("--base", default="", help="another checkout to compare with (its src/)")
    ap.add_argument(
        "--local-tree", action="store_true", help="bench/local.py's tree (3 GB, 67k entries)"
    )
    args = ap.parse_args()
    if args.base:  # compiled like this checkout's (common.py), so both start alike
        compileall.compile_dir(os.path.join(os.path.abspath(args.base), "src"), quiet=2)
    w = args.work
    size = "4G" if args.local_tree else "2G"
    with (
        tmpfs(f"{w}/src", size) as src,
        tmpfs(f"{w}/dev1", size) as dev1,
        tmpfs(f"{w}/dev2", size) as dev2,
        tmpfs(f"{w}/tar", size) as tardev,
        tmpfs(f"{w}/state", "1G") as state,
        tmpfs(f"{w}/restore", size) as restore,
    ):
        if args.local_tree:
            build_tree(src, small=False)
        else:
            for d in ("/usr/share/doc", "/usr/lib/x86_64-linux-gnu"):
                dest = os.path.join(src, os.path.basename(d))
                subprocess.run(["cp", "-a", d, dest], check=True)
            random_file(os.path.join(src, "random.bin"), 256 << 20, seed=1)
        files, nbytes = tree_stats(src)
        print(f"tree: {files} files, {nbytes / 1e6:.0f} MB", file=sys.stderr)
        env = parbackup_env(os.path.join(state, "catalog.sqlite"))
        run("backup", parbackup_argv("backup", src, "-d", dev1, "-d", dev2, "--json"), env=env)
        run("tar -cf", ["tar", "-cf", f"{tardev}/t.tar", "-C", src, "."])
        ratios, cpus, speedups, cpu_cuts = [], [], [], []
        for i in range(args.pairs):
            argv = parbackup_argv("restore", "-t", restore, "--json")
            if args.base:
                base_env = {**env, "PYTHONPATH": os.path.join(os.path.abspath(args.base), "src")}
                before = run("parbackup restore (base)", argv, env=base_env)
                wipe(restore)
            pb = run("parbackup restore", argv, env=env)
            if i == 0 and not same_tree(src, os.path.join(restore, src.lstrip("/"))):
                raise SystemExit("parbackup restore differs from the source")
            wipe(restore)
            if args.base:
                speedups.append(before.wall / pb.wall)
                cpu_cuts.append(before.cpu / pb.cpu)
                print(
                    f"pair {i + 1}: base {before.wall:.2f} s ({before.cpu:.2f} CPU s), "
                    f"this {pb.wall:.2f} s ({pb.cpu:.2f} CPU s)"
                )
            tar = run("tar -xf", ["tar", "-xf", f"{tardev}/t.tar", "-C", restore])
            wipe(restore)
            ratios.append(pb.wall / tar.wall)
            cpus.append(pb.cpu / tar.cpu)
            print(
                f"pair {i + 1}: parbackup {pb.wall:.2f} s ({pb.rate(nbytes):.0f} MB/s, "
                f"{pb.cpu:.2f} CPU s), tar -xf {tar.wall:.2f} s ({tar.rate(nbytes):.0f} MB/s, "
                f"{tar.cpu:.2f} CPU s), ratio {ratios[-1]:.2f} (CPU {cpus[-1]:.2f}); "
                f"load {os.getloadavg()[0]:.1f}"
            )
        print(f"restore wall, parbackup / tar -xf: median {statistics.median(ratios):.2f}")
        print(f"restore CPU (all processes) / tar -xf: median {statistics.median(cpus):.2f}")
        if speedups:
            print(f"restore wall, base / this checkout: median {statistics.median(speedups):.2f}")
            print(f"restore CPU, base / this checkout: median {statistics.median(cpu_cuts):.2f}")


if __name__ == "__main__":
    main()
