"""Benchmark 1 (local throughput) and the restore half of benchmark 4.

    sudo .venv/bin/python bench/local.py            # the full ~2.8 GB, ~70k-file tree
    sudo .venv/bin/python bench/local.py --small    # a quick run to try the script

The source tree is a copy of the Python installation's library directory, /usr/share/doc
and /usr/lib/x86_64-linux-gnu plus four 256 MiB random files, on its own tmpfs. Every
device is its own tmpfs. parbackup writes 2 devices; tar, restic and borg write one
device of the same kind; rclone copies onto a 2-upstream union (policy mfs) of the same
two devices. Each tool runs as a child process; wall time, CPU seconds (of its whole
process tree, from a cgroup: see common.py) and peak RSS are taken the same way for all.
Prints a Markdown table and the ratios, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig

from common import (
    PY,
    Measured,
    conditions,
    drop_caches,
    ensure_debs,
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    same_tree,
    table,
    tmpfs,
    tree_stats,
    wipe,
)

PEERS = {"restic": "restic", "borg": "borgbackup", "rclone": "rclone", "tar": "tar"}
TOOLS = ("parbackup1", "parbackup", "tar", "restic", "borg", "rclone")
PASSWORD = {"RESTIC_PASSWORD": "bench", "BORG_PASSPHRASE": ""}


def build_tree(src: str, small: bool) -> None:
    """Copy the real directories and add the random files."""
    if small:
        dirs = ["/usr/share/doc"]
        randoms, rsize = 2, 32 << 20
    else:
        dirs = [sysconfig.get_paths()["stdlib"], "/usr/share/doc", "/usr/lib/x86_64-linux-gnu"]
        randoms, rsize = 4, 256 << 20
    for i, d in enumerate(dirs):
        dest = os.path.join(src, f"t{i}-{os.path.basename(d.rstrip('/'))}")
        subprocess.run(["cp", "-a", d, dest], check=True)
    os.makedirs(os.path.join(src, "random"), exist_ok=True)
    for i in range(randoms):
        random_file(os.path.join(src, "random", f"r{i}.bin"), rsize, seed=i)


def rclone_conf(path: str, a: str, b: str) -> None:
    with open(path, "w") as fh:
        fh.write(
            f"[u]\ntype = union\nupstreams = {a} {b}\n"
            "action_policy = epall\ncreate_policy = mfs\nsearch_policy = ff\n"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="a small tree to try the script")
    ap.add_argument("--work", default="/tmp/pbbench", help="where the tmpfs mounts go")
    ap.add_argument("--only", default="", help="comma list of tools to run (default all)")
    ap.add_argument("--profile", default="", help="write a pyinstrument profile of parbackup")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda tool: not only or tool in only  # noqa: E731
    ensure_debs({p: PEERS[p] for p in ("restic", "borg", "rclone") if want(p)})
    size = "2G" if args.small else "6G"
    w = args.work
    results: dict[str, Measured] = {}
    restores: dict[str, Measured] = {}
    with (
        tmpfs(f"{w}/src", size) as src,
        tmpfs(f"{w}/dev1", size) as dev1,
        tmpfs(f"{w}/dev2", size) as dev2,
        tmpfs(f"{w}/state", "1G") as state,
        tmpfs(f"{w}/restore", size) as restore,
    ):
        build_tree(src, args.small)
        files, nbytes = tree_stats(src)
        entries = 1 + sum(len(d) + len(f) for _, d, f in os.walk(src))
        print(f"tree: {files} files, {entries} entries, {nbytes / 1e6:.0f} MB", file=sys.stderr)
        catalog = os.path.join(state, "catalog.sqlite")
        env = parbackup_env(catalog)

        if want("parbackup1"):  # the same tree onto one device: what a second one adds
            drop_caches()
            one = run(
                "parbackup (1 device)",
                parbackup_argv("backup", src, "-d", dev1, "--json"),
                env=parbackup_env(os.path.join(state, "one.sqlite")),
            )
            results["parbackup1"] = one
            wipe(dev1)
        if want("parbackup"):
            drop_caches()
            argv = parbackup_argv("backup", src, "-d", dev1, "-d", dev2, "--json")
            if args.profile:
                argv = [PY, "-m", "pyinstrument", "-o", args.profile, "-r", "html", "-m",
                        "parbackup", *argv[3:]]  # fmt: skip
            m = run("parbackup (2 devices)", argv, env=env)
            results["parbackup"] = m
            if not args.profile:
                print(json.dumps(json.loads(m.out)["devices"]), file=sys.stderr)
            drop_caches()
            restores["parbackup"] = run(
                "parbackup restore",
                parbackup_argv("restore", "--target", restore, "--json"),
                env=env,
            )
            restored = os.path.join(restore, src.lstrip("/"))
            if not same_tree(src, restored):
                raise SystemExit("parbackup restore differs from the source")
            wipe(restore)
            wipe(dev1)
            wipe(dev2)
        if want("tar"):
            drop_caches()
            results["tar"] = run(
                "tar -cf (1 device)", ["tar", "-cf", f"{dev1}/t.tar", "-C", src, "."]
            )
            drop_caches()
            restores["tar"] = run("tar -xf", ["tar", "-xf", f"{dev1}/t.tar", "-C", restore])
            wipe(restore)
            wipe(dev1)
        if want("restic"):
            renv = {**PASSWORD, "XDG_CACHE_HOME": f"{state}/cache"}
            repo = f"{dev1}/restic"
            run("restic init", ["restic", "init", "--repo", repo], env=renv)
            drop_caches()
            results["restic"] = run(
                "restic backup (1 device)",
                ["restic", "backup", "-q", "--repo", repo, src],
                env=renv,
            )
            drop_caches()
            restores["restic"] = run(
                "restic restore",
                ["restic", "restore", "latest", "--repo", repo, "--target", restore],
                env=renv,
            )
            wipe(restore)
            wipe(dev1)
            shutil.rmtree(f"{state}/cache", ignore_errors=True)
        if want("borg"):
            benv = {**PASSWORD, "BORG_BASE_DIR": f"{state}/borg"}
            repo = f"{dev1}/borg"
            run("borg init", ["borg", "init", "-e", "none", repo], env=benv)
            drop_caches()
            results["borg"] = run(
                "borg create (1 device)", ["borg", "create", f"{repo}::a", src], env=benv
            )
            wipe(dev1)
            shutil.rmtree(f"{state}/borg", ignore_errors=True)
        if want("rclone"):
            conf = f"{state}/rclone.conf"
            rclone_conf(conf, dev1, dev2)
            drop_caches()
            results["rclone"] = run(
                "rclone copy (2-upstream union, mfs)",
                ["rclone", "--config", conf, "copy", src, "u:tree"],
            )
            wipe(dev1)
            wipe(dev2)
    report(results, restores, files, entries, nbytes, args)


def report(results, restores, files, entries, nbytes, args) -> None:
    rows = []
    for m in results.values():
        rows.append(
            [
                m.name,
                f"{m.wall:.2f}",
                f"{m.rate(nbytes):.0f}",
                f"{entries / m.wall:.0f}",
                f"{m.cpu:.2f}",
                m.memory,
            ]
        )
    print(f"\nTree: {files} files ({entries} entries), {nbytes / 1e6:.0f} MB. {conditions()}\n")
    print(table(["backup", "wall s", "MB/s", "files/s", "CPU s", "peak RSS (sum) / PSS MB"], rows))
    rrows = [
        [
            m.name,
            f"{m.wall:.2f}",
            f"{m.rate(nbytes):.0f}",
            f"{m.cpu:.2f}",
            m.memory,
        ]
        for m in restores.values()
    ]
    if rrows:
        print()
        print(table(["restore", "wall s", "MB/s", "CPU s", "peak RSS (sum) / PSS MB"], rrows))
    pb = results.get("parbackup")
    ratios = {}
    if pb:
        print()
        if "parbackup1" in results:
            ratios["speed-up, 2 devices over 1"] = results["parbackup1"].wall / pb.wall
        if "tar" in results:
            ratios["wall parbackup / tar -cf"] = pb.wall / results["tar"].wall
            ratios["CPU parbackup / tar -cf"] = pb.cpu / results["tar"].cpu
        for peer in ("restic", "borg", "rclone"):
            if peer in results:
                ratios[f"throughput parbackup / {peer}"] = results[peer].wall / pb.wall
        if "parbackup" in restores:
            for peer in ("tar", "restic"):
                if peer in restores:
                    ratios[f"restore throughput parbackup / {peer}"] = (
                        restores[peer].wall / restores["parbackup"].wall
                    )
            if "tar" in restores:
                ratios["restore wall parbackup / tar -xf"] = (
                    restores["parbackup"].wall / restores["tar"].wall
                )
                ratios["restore CPU parbackup / tar -xf"] = (
                    restores["parbackup"].cpu / restores["tar"].cpu
                )
        for k, v in ratios.items():
            print(f"- {k}: {v:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "files": files,
                    "entries": entries,
                    "bytes": nbytes,
                    "conditions": conditions(),
                    "backup": {k: vars(m) | {"out": ""} for k, m in results.items()},
                    "restore": {k: vars(m) | {"out": ""} for k, m in restores.items()},
                    "ratios": ratios,
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
