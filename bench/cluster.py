#!/usr/bin/env python3
"""C2 benchmark: aggregate backup throughput with 1, 2 and 3 Dask worker hosts.

One real Dask cluster (tests/clusterfixtures.py): a scheduler and 3 workers, each worker
in a network namespace "host" of its own. Each host has its own device, an SFTP server
reached over that host's own veth link, shaped with ``tc ... tbf rate RATE`` at both ends;
the device URL names its host (``?host=hostN``) so its mover runs there and the bytes
go host -> its link -> its device, never through the controller. With n = 1, 2, 3 hosts,
n data sets of SIZE each (the work grows with the hosts, as when hosts are added for more
data) are backed up with ``--cluster`` onto the devices of the first n hosts, all in this
one run; the table gives the aggregate throughput (bytes / time) and its ratio to n x
the one-host throughput (goal: >= 0.9). "in-engine" is the backup's own time from its
report; "wall" includes starting Python, joining the cluster and connecting (~1-2 s).
Everything stays on this machine. Needs root (namespaces, tc), OpenSSH sshd and
parbackup[cluster].

    sudo .venv/bin/python bench/cluster.py                    # 24 MB a host, 40mbit links
    sudo .venv/bin/python bench/cluster.py --size 12M --rate 20mbit
    sudo .venv/bin/python bench/cluster.py --repeat 3         # best of 3 runs each
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from clusterfixtures import DaskCluster, cluster_available  # noqa: E402
from parbackup.devices.url import parse_size  # noqa: E402
from servers import SshServer  # noqa: E402


def make_data(base: Path, size: int) -> Path:
    """A tree of files of random sizes (1 kB to 4 MB) adding up to ``size`` bytes."""
    rng = random.Random(1)
    left, i = size, 0
    while left > 0:
        n = min(left, rng.randint(1_000, 4_000_000))
        sub = base / f"d{i % 8}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(rng.randbytes(n))
        left -= n
        i += 1
    return base


def backup(sources: list[Path], urls: list[str], work: Path, cluster: str) -> tuple[float, dict]:
    """Run ``parbackup backup --cluster`` as a user would; wall seconds and its report."""
    cat = work / f"cat-{time.monotonic_ns()}.sqlite"
    args = [a for u in urls for a in ("-d", u)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "parbackup", "backup", *map(str, sources), *args]
    cmd += ["--cluster", cluster]
    started = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--catalog", str(cat), "--json"], capture_output=True, env=env, text=True
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"backup failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="24M", help="bytes per data set (default 24M)")
    ap.add_argument("--rate", default="40mbit", help="link rate per host (default 40mbit)")
    ap.add_argument("--hosts", type=int, default=3, help="at most this many hosts (3)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per host count; the fastest counts (1)"
    )
    opts = ap.parse_args()
    if not cluster_available():
        raise SystemExit("needs root, ip netns, unshare, tc and parbackup[cluster]")
    size = parse_size(opts.size)
    work = Path(tempfile.mkdtemp(prefix="parbackup-cluster-"))
    rows = []
    try:
        sets = [make_data(work / f"data{n}", size) for n in range(1, opts.hosts + 1)]
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(
                DaskCluster(work / "cluster", hosts=opts.hosts, rate=opts.rate)
            )
            servers = []
            for i in cluster.indices:
                host = cluster.hosts[i]  # its sshd listens on this side of host i's link
                ssh = SshServer(work / f"ssh{i}", host=host.local_ip, port=2222)
                servers.append((i, stack.enter_context(ssh)))
            base = base_wall = None
            for n in range(1, opts.hosts + 1):
                runs = []
                for k in range(max(1, opts.repeat)):
                    urls = []  # fresh device directories for every run
                    for i, ssh in servers[:n]:
                        d = work / f"dev-{n}.{k}-{i}"
                        d.mkdir()
                        urls.append(ssh.url(d, f"host=host{i}"))
                    runs.append(backup(sets[:n], urls, work, cluster.address))
                wall = min(w for w, _r in runs)  # the least disturbed by other work
                report = min((r for _w, r in runs), key=lambda r: r["seconds"])
                engine = report["seconds"]
                rate = report["bytes"] / engine
                base = base or rate
                whole = report["bytes"] / wall
                base_wall = base_wall or whole
                ratios = (rate / (n * base), whole / (n * base_wall))
                rows.append((n, report["bytes"], wall, engine, rate, *ratios))
                print(
                    f"hosts={n}  {engine:6.2f} s in engine ({wall:6.2f} s wall)  "
                    f"{rate / 1e6:6.2f} MB/s  ratio to linear {ratios[0]:.2f} "
                    f"(whole command {ratios[1]:.2f})",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nRate per host link: {opts.rate} (tbf, both ends); {opts.size} per host; "
        f"best of {max(1, opts.repeat)} run(s) each.\n"
    )
    head = ["hosts", "bytes", "wall s", "in-engine s", "MB/s (in engine)",
            "ratio to n x 1-host", "ratio, whole command"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("| ---: |" + " ---: |" * (len(head) - 1))
    for n, nbytes, wall, engine, rate, ratio, whole in rows:
        print(f"| {n} | {nbytes} | {wall:.2f} | {engine:.2f} | {rate / 1e6:.2f} | {ratio:.2f} "
              f"| {whole:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
