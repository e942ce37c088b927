#!/usr/bin/env python3
"""Encryption and compression (issue 13), measured in one run:

1. the local benchmark's tree (bench/local.py) onto 2 tmpfs devices: plain, against
   ``--encrypt`` (AES-256-GCM, zstd auto) — goal: wall <= 1.3x the plain backup;
   against ``restic backup`` (which also encrypts and compresses) onto one tmpfs —
   goal: >= 3x its throughput. Also the balance of *stored* bytes between the two
   devices (the plan shares out source bytes; see README "Encryption and compression");
2. a compressible tree (Python source and text) over the distant benchmark's shaped
   links (network namespaces, sshd, tc tbf; bench/distant.py), plain against
   ``--compression auto`` — goal: faster by at least 80% of the compression ratio.

    sudo .venv/bin/python bench/crypto.py --small     # a quick run
    sudo .venv/bin/python bench/crypto.py             # the full local tree
    sudo .venv/bin/python bench/crypto.py --only local --rounds 3   # alternating rounds

Needs root (tmpfs, namespaces, tc); installs Debian's restic on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from common import (
    conditions,
    drop_caches,
    ensure_debs,
    parbackup_argv,
    parbackup_env,
    run,
    same_tree,
    table,
    tmpfs,
    tree_stats,
    wipe,
)
from local import build_tree

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from servers import NetnsHost, SshServer  # noqa: E402

PASSWORD = "bench passphrase"


def du(path: str) -> int:
    """Bytes in the files under ``path``."""
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _dirs, files in os.walk(path) for f in files
    )


def local(args: argparse.Namespace) -> list[list[str]]:
    """Plain vs encrypted parbackup vs restic on tmpfs devices; the table rows."""
    ensure_debs({"restic": "restic"})
    size = "2G" if args.small else "6G"
    w = args.work
    with (
        tmpfs(f"{w}/src", size) as src,
        tmpfs(f"{w}/dev1", size) as dev1,
        tmpfs(f"{w}/dev2", size) as dev2,
        tmpfs(f"{w}/state", "1G") as state,
        tmpfs(f"{w}/restore", size) as restore,
    ):
        build_tree(src, args.small)
        files, nbytes = tree_stats(src)
        print(f"tree: {files} files, {nbytes / 1e6:.0f} MB", file=sys.stderr)
        pw = {"PARBACKUP_PASSWORD": PASSWORD}
        runs, restores, stored = {}, {}, {}
        variants = (
            ("plain", []),
            ("encrypted", ["--encrypt"]),
            ("encrypted-only", ["--encrypt", "--compression", "off"]),
        )
        rounds: dict[str, list] = {name: [] for name, _extra in variants}
        for _round in range(args.rounds):  # alternating: a change of load hits all alike
            for name, extra in variants:
                env = {**parbackup_env(os.path.join(state, f"{name}.sqlite")), **pw}
                for f in os.listdir(state):  # every round a first backup
                    if f.startswith(f"{name}.sqlite"):
                        os.unlink(os.path.join(state, f))
                drop_caches()
                argv = parbackup_argv("backup", src, "-d", dev1, "-d", dev2, "--json", *extra)
                rounds[name].append(run(f"parbackup {name} (2 devices)", argv, env=env))
                stored[name] = (du(dev1), du(dev2))
                if _round == 0:
                    drop_caches()
                    back = run(
                        f"parbackup restore ({name})",
                        parbackup_argv("restore", "--target", restore, "--json"),
                        env=env,
                    )
                    restores[name] = back
                    if not same_tree(src, os.path.join(restore, src.lstrip("/"))):
                        raise SystemExit(f"{name} restore differs from the source")
                    wipe(restore)
                wipe(dev1)
                wipe(dev2)
        for name, measured in rounds.items():  # the table shows each variant's median
            runs[name] = sorted(measured, key=lambda m: m.wall)[len(measured) // 2]
        per_round = {
            name: [m.wall / p.wall for m, p in zip(rounds[name], rounds["plain"], strict=True)]
            for name in rounds
        }
        renv = {"RESTIC_PASSWORD": PASSWORD, "XDG_CACHE_HOME": f"{state}/cache"}
        repo = f"{dev1}/restic"
        run("restic init", ["restic", "init", "--repo", repo], env=renv)
        drop_caches()
        runs["restic"] = run(
            "restic backup (1 device)", ["restic", "backup", "-q", "--repo", repo, src], env=renv
        )
        stored["restic"] = (du(dev1), 0)
        wipe(dev1)
    rows = []
    for key, m in runs.items():
        a, b = stored[key]
        spread = f"{max(a, b) / max(1, min(a, b)):.3f}" if b else "-"
        rows.append(
            [
                m.name,
                f"{m.wall:.2f}",
                f"{m.rate(nbytes):.0f}",
                f"{m.cpu:.2f}",
                f"{(a + b) / 1e6:.0f}",
                spread,
            ]
        )
    ratio = statistics.median(per_round["encrypted"])
    alone = statistics.median(per_round["encrypted-only"])
    vs_restic = runs["restic"].wall / runs["encrypted"].wall
    print(f"\nLocal tree: {files} files, {nbytes / 1e6:.0f} MB. {conditions()}\n")
    print(
        table(
            ["backup", "wall s", "MB/s", "CPU s", "stored MB", "device stored max/min"],
            rows,
        )
    )
    back = restores["encrypted"].wall / restores["plain"].wall
    print(
        f"\nrestore: plain {restores['plain'].wall:.2f} s, encrypted "
        f"{restores['encrypted'].wall:.2f} s ({back:.2f}x)"
    )
    spread = ", ".join(f"{r:.2f}" for r in per_round["encrypted"])
    print(f"encrypted / plain wall: {ratio:.2f}x (goal <= 1.3x; median of rounds: {spread})")
    print(f"encrypted without compression / plain wall: {alone:.2f}x (median)")
    print(f"encrypted throughput / restic's: {vs_restic:.2f}x (goal >= 3x)")
    return rows


def source_tree(dest: Path, copies: int) -> int:
    """A compressible tree: ``copies`` copies of the Python standard library's sources."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for i in range(copies):
        shutil.copytree(
            stdlib,
            dest / f"copy{i}",
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "site-packages"),
        )
    return tree_stats(str(dest))[1]


def distant(args: argparse.Namespace) -> None:
    """Plain vs --compression auto over 2 shaped SFTP links."""
    if not NetnsHost.available():
        print("distant part skipped: needs root and ip netns", file=sys.stderr)
        return
    work = Path(tempfile.mkdtemp(prefix="parbackup-crypto-"))
    try:
        nbytes = source_tree(work / "src", args.copies)
        with contextlib.ExitStack() as stack:
            servers = []
            for i in (1, 2):
                host = stack.enter_context(NetnsHost(i, rate=args.rate))
                ssh = SshServer(work / f"ssh{i}", host=host.ip, port=2222, netns=host.name)
                servers.append(stack.enter_context(ssh))
            walls, stored, engine = {}, {}, {}
            for name, extra in (("plain", []), ("compressed", ["--compression", "auto"])):
                urls = []
                for i, ssh in enumerate(servers):
                    d = work / f"dev-{name}-{i}"
                    d.mkdir()
                    urls.append((d, ssh.url(d)))
                cat = work / f"{name}.sqlite"
                argv = [sys.executable, "-m", "parbackup", "backup", str(work / "src")]
                argv += [a for _d, u in urls for a in ("-d", u)]
                argv += ["--catalog", str(cat), "--json", *extra]
                env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
                started = time.monotonic()
                proc = subprocess.run(argv, capture_output=True, env=env, text=True)
                walls[name] = time.monotonic() - started
                if proc.returncode != 0:
                    raise SystemExit(f"backup failed: {proc.stdout}{proc.stderr}")
                engine[name] = json.loads(proc.stdout)["seconds"]
                stored[name] = sum(du(str(d)) for d, _u in urls)
        ratio = stored["plain"] / stored["compressed"]
        speed = walls["plain"] / walls["compressed"]
        print(f"\nCompressible tree over 2 links of {args.rate} (tbf): {nbytes / 1e6:.0f} MB\n")
        print(
            table(
                ["backup", "wall s", "in-engine s", "stored MB"],
                [
                    [k, f"{walls[k]:.2f}", f"{engine[k]:.2f}", f"{stored[k] / 1e6:.1f}"]
                    for k in walls
                ],
            )
        )
        print(
            f"\ncompression ratio {ratio:.2f}x, speed-up {speed:.2f}x = "
            f"{speed / ratio:.0%} of the ratio (goal >= 80%)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="a small local tree")
    ap.add_argument("--work", default="/tmp/pbbench-crypto", help="where tmpfs mounts go")
    ap.add_argument("--rate", default="50mbit", help="link rate per host (distant part)")
    ap.add_argument("--only", default="local,distant", help="local, distant or both")
    ap.add_argument("--copies", type=int, default=3, help="stdlib copies (distant part)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of the local backups")
    args = ap.parse_args()
    if "local" in args.only:
        local(args)
    if "distant" in args.only:
        distant(args)


if __name__ == "__main__":
    main()
