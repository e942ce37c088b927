#!/usr/bin/env python3
"""D2 benchmark: one backup onto n = 1, 2, 4 distant SFTP hosts used in parallel.

Each host is a network namespace joined to this one by a veth pair, running its own sshd,
with ``tc qdisc ... tbf rate RATE burst 64kb latency 500ms`` on both ends of its link
(this kernel has tbf but no netem, so no added delay). For a tree of many files and for
one large file it reports the wall time of ``parbackup backup`` against the ideal
(bytes / (n x rate)) and the speed-up over n = 1, all measured in this one run. The wall
time includes starting Python, connecting and labelling (about a second); "in-engine" is
the backup's own time from its report.
Everything stays on this machine. Needs root (namespaces, tc) and OpenSSH sshd.

    sudo .venv/bin/python bench/distant.py                 # 48 MB per data set, 50mbit
    sudo .venv/bin/python bench/distant.py --size 24M --hosts 1,2
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

from parbackup.devices.url import parse_size  # noqa: E402
from servers import NetnsHost, SshServer  # noqa: E402


def rate_bytes(rate: str) -> float:
    """'50mbit' -> bytes per second."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for suffix, mult in units.items():
        if rate.endswith(suffix):
            return float(rate[: -len(suffix)]) * mult / 8
    raise SystemExit(f"rate must end in kbit, mbit or gbit: {rate}")


def make_data(base: Path, size: int) -> dict[str, Path]:
    """A tree of many files of random sizes, and one large file, of ``size`` bytes each."""
    rng = random.Random(1)
    tree = base / "tree"
    tree.mkdir(parents=True)
    left, i = size, 0
    while left > 0:
        n = min(left, rng.randint(1_000, 1_000_000))
        sub = tree / f"d{i % 16}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(rng.randbytes(n))
        left -= n
        i += 1
    big = base / "large"
    big.mkdir()
    with open(big / "large.bin", "wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    return {"tree": tree, "large file": big}


def backup(source: Path, urls: list[str], work: Path) -> tuple[float, dict]:
    """Run ``parbackup backup`` as a user would; wall seconds and its JSON report."""
    cat = work / f"cat-{time.monotonic_ns()}.sqlite"
    args = [a for u in urls for a in ("-d", u)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "parbackup", "backup", str(source), *args]
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
    ap.add_argument("--size", default="48M", help="bytes per data set (default 48M)")
    ap.add_argument("--rate", default="50mbit", help="link rate per host (default 50mbit)")
    ap.add_argument("--hosts", default="1,2,4", help="numbers of hosts to try (default 1,2,4)")
    opts = ap.parse_args()
    if not NetnsHost.available():
        raise SystemExit("needs root and ip netns")
    size, rate = parse_size(opts.size), rate_bytes(opts.rate)
    counts = [int(n) for n in opts.hosts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="parbackup-distant-"))
    rows = []
    try:
        data = make_data(work / "data", size)
        with contextlib.ExitStack() as stack:
            servers = []
            for i in range(1, max(counts) + 1):
                host = stack.enter_context(NetnsHost(i, rate=opts.rate))
                ssh = SshServer(work / f"ssh{i}", host=host.ip, port=2222, netns=host.name)
                servers.append(stack.enter_context(ssh))
            for name, source in data.items():
                base = None
                for n in counts:
                    urls = []
                    for i, ssh in enumerate(servers[:n]):
                        d = work / f"dev-{name.replace(' ', '-')}-{n}-{i}"
                        d.mkdir()
                        urls.append(ssh.url(d))
                    wall, report = backup(source, urls, work)
                    ideal = report["bytes"] / (n * rate)
                    base = base or wall
                    shares = [d["bytes"] for d in report["devices"]]
                    rows.append(
                        (
                            name,
                            n,
                            report["bytes"],
                            wall,
                            report["seconds"],
                            ideal,
                            ideal / wall,
                            base / wall,
                            max(shares) / max(1, min(shares)),
                        )
                    )
                    print(
                        f"{name:10} n={n}  {wall:6.2f} s  ideal {ideal:6.2f} s  "
                        f"efficiency {ideal / wall:5.1%}  speed-up {base / wall:4.2f}x",
                        file=sys.stderr,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nRate per link: {opts.rate} (tbf, both ends); data set: {opts.size} each.\n")
    head = ["data", "hosts", "bytes", "wall s", "in-engine s", "ideal s", "ideal / wall"]
    head += ["speed-up vs 1 host", "balance max/min"]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    for name, n, nbytes, wall, engine, ideal, eff, speed, bal in rows:
        print(
            f"| {name} | {n} | {nbytes} | {wall:.2f} | {engine:.2f} | {ideal:.2f} | {eff:.0%} "
            f"| {speed:.2f}x | {bal:.3f} |"
        )


if __name__ == "__main__":
    main()
