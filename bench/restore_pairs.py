"""Versions of parbackup's restore and ``tar -xf`` in alternating rounds, on one backup.

    sudo .venv/bin/python bench/restore_pairs.py --work /tmp/NAME --prepare
    sudo .venv/bin/python bench/restore_pairs.py --work /tmp/NAME --rounds 7 \\
        old=/tmp/NAME/old/src new=src

``--prepare`` mounts a tmpfs each for the source (bench/local.py's tree: 2.7 GB, 67.6k
entries), two devices, the tar file, the catalog and the restore target under
``--work``, backs the tree up onto the two devices (with this checkout's code) and
writes the tar file; they stay mounted for the rounds (unmount them yourself). Building
the tree and the backup takes minutes; the rounds then compare versions on the very
same backup (every version reads the same catalog and volumes: restore writes neither).

Each round restores with every version, then runs ``tar -xf``, the target wiped between
runs; the order of the versions is reversed every other round (common.alternating). The
first round's restores are compared with the source (``diff -r``). Wall time and CPU
seconds of the whole process tree (cgroup, bench/common.py). Prints each run, then per
version the medians of wall, CPU, wall / tar's and CPU / tar's of the same round, and
the median per-round CPU and wall ratios of each version to the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess

from common import PY, SRC, Measured, alternating, conditions, run, same_tree, wipe
from local import build_tree

MOUNTS = ("src", "dev1", "dev2", "tar", "state", "restore")


def prepare(work: str) -> None:
    """Mount the tmpfs rig under ``work``, build the tree, back it up, tar it."""
    for name in MOUNTS:
        path = os.path.join(work, name)
        os.makedirs(path, exist_ok=True)
        size = "1G" if name == "state" else "4G"
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
    src = os.path.join(work, "src")
    build_tree(src, small=False)
    env = {"PYTHONPATH": str(SRC), "PARBACKUP_CATALOG": os.path.join(work, "state", "cat.sqlite")}
    devices = ["-d", os.path.join(work, "dev1"), "-d", os.path.join(work, "dev2")]
    run("backup", [PY, "-m", "parbackup", "backup", src, *devices, "--json"], env=env)
    run("tar -cf", ["tar", "-cf", os.path.join(work, "tar", "t.tar"), "-C", src, "."])


def restore(work: str, src: str, name: str) -> Measured:
    """``parbackup restore -t TARGET --json`` of the rig's backup with the code in ``src``."""
    env = {"PYTHONPATH": src, "PARBACKUP_CATALOG": os.path.join(work, "state", "cat.sqlite")}
    argv = [PY, "-m", "parbackup", "restore", "-t", os.path.join(work, "restore"), "--json"]
    return run(name, argv, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="*", help="NAME=SRC_DIR (the first is the base)")
    ap.add_argument("--work", required=True, help="where the tmpfs mounts are (or go)")
    ap.add_argument("--prepare", action="store_true", help="mount, build, back up, tar")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    if args.prepare:
        prepare(work)
    if not args.versions:
        return
    versions = dict(v.split("=", 1) for v in args.versions)
    for path in versions.values():  # compiled alike, as an installation is
        subprocess.run([PY, "-m", "compileall", "-q", path], check=True)
    target = os.path.join(work, "restore")
    print(conditions())
    runs: dict[str, list[Measured]] = {name: [] for name in versions}
    tars: list[Measured] = []
    for i, order in alternating(list(versions), args.rounds):
        for name in order:
            m = restore(work, versions[name], name)
            if i == 0 and not same_tree(
                os.path.join(work, "src"), os.path.join(target, work.lstrip("/"), "src")
            ):
                raise SystemExit(f"{name}: the restore differs from the source")
            wipe(target)
            runs[name].append(m)
            print(f"round {i + 1}: {name} {m.wall:.2f} s, {m.cpu:.2f} CPU s", flush=True)
        tar = run("tar -xf", ["tar", "-xf", os.path.join(work, "tar", "t.tar"), "-C", target])
        wipe(target)
        tars.append(tar)
        print(f"round {i + 1}: tar -xf {tar.wall:.2f} s, {tar.cpu:.2f} CPU s", flush=True)
    first = next(iter(versions))
    med = statistics.median
    tar_wall, tar_cpu = med(t.wall for t in tars), med(t.cpu for t in tars)
    print(f"tar -xf: median wall {tar_wall:.2f} s, CPU {tar_cpu:.2f} s")
    for name, ms in runs.items():
        pairs, base = list(zip(ms, tars, strict=True)), list(zip(ms, runs[first], strict=True))
        print(
            f"{name}: median wall {med(m.wall for m in ms):.2f} s, "
            f"CPU {med(m.cpu for m in ms):.2f} s; "
            f"/ tar: wall {med(m.wall / t.wall for m, t in pairs):.2f}x, "
            f"CPU {med(m.cpu / t.cpu for m, t in pairs):.2f}x; "
            f"/ {first}: wall {med(m.wall / b.wall for m, b in base):.3f}, "
            f"CPU {med(m.cpu / b.cpu for m, b in base):.3f}"
        )
    # The VM's memory only adds time, run by run: each variant's best round is its time
    # with memory fast (bench/pairs.py ``best_of_rounds``), the ratios of those a fast hour's.
    best_wall, best_cpu = min(t.wall for t in tars), min(t.cpu for t in tars)
    print(f"best of the rounds: tar -xf wall {best_wall:.2f} s, CPU {best_cpu:.2f} s")
    for name, ms in runs.items():
        wall, cpu = min(m.wall for m in ms), min(m.cpu for m in ms)
        print(
            f"{name}: best wall {wall:.2f} s, CPU {cpu:.2f} s; / tar: wall "
            f"{wall / best_wall:.2f}x, CPU {cpu / best_cpu:.2f}x"
        )


if __name__ == "__main__":
    main()
