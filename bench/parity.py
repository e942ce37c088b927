"""Parity cost (issue 12, REQUIREMENTS K3): the three ratios of the issue, one run.

    sudo .venv/bin/python bench/parity.py                 # 1 GiB of files, 3 pairs
    sudo .venv/bin/python bench/parity.py --size 2048 --pairs 5
    sudo .venv/bin/python bench/parity.py --before /path/to/older/src   # a third kind
    sudo .venv/bin/python bench/parity.py --limit 100M    # devices slower than the CPUs

Every device, the source and the restore target are their own tmpfs. Prints:
- backup wall, ``--parity 1`` on 4 devices / the same backup on 3 devices without
  parity (goal <= 1.15), and the CPU seconds of both (the machine's 2 cores are the
  bottleneck on tmpfs, so CPU tells what the wall hides under load); with ``--before``,
  the same ``--parity 1`` backup by an older source tree too (e.g. parity written after
  the data), alternating with the others;
- restore throughput with one data device missing / the healthy restore (goal >= 0.7);
- peak RSS summed over the process tree of each run (goal < 200 MB), and the codec's
  own encode and decode speed (MB/s of data per core).

With ``--limit RATE`` every device is held to RATE (``DIR?limit=RATE``, the throttle
wrapper), as disks, tape drives and links are: the devices, not this machine's two
cores, are then the bottleneck, which is what a backup spread over devices meets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

from common import parbackup_argv, parbackup_env, random_file, run, same_tree, tmpfs, wipe

sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "src")))

from parbackup.redundancy.codec import RowCodec
from parbackup.redundancy.layout import UNIT


def codec_speed(k: int, m: int, rounds: int = 64) -> tuple[float, float]:
    """Encode and decode (one data unit lost) speed, MB/s of data, one core."""
    codec = RowCodec(k, m, UNIT)
    data = [os.urandom(UNIT) for _ in range(k)]
    parity, headers = codec.encode(data)
    started = time.perf_counter()
    for _ in range(rounds):
        codec.encode(data)
    enc = rounds * k * UNIT / (time.perf_counter() - started) / 1e6
    present = {i: u for i, u in enumerate(data + parity) if i != 0}
    started = time.perf_counter()
    for _ in range(rounds):
        codec.decode(present, headers)
    dec = rounds * k * UNIT / (time.perf_counter() - started) / 1e6
    return enc, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/pbparity", help="where the tmpfs mounts go")
    ap.add_argument("--size", type=int, default=1024, help="MiB of source data")
    ap.add_argument("--pairs", type=int, default=3, help="alternating runs of each kind")
    ap.add_argument("--before", default="", help="an older src/ to run --parity 1 with too")
    ap.add_argument("--limit", default="", help="hold every device to this rate (e.g. 100M)")
    args = ap.parse_args()
    for k, m in ((3, 1), (4, 2)):
        enc, dec = codec_speed(k, m)
        print(f"codec isa_l_rs_cauchy k={k} m={m}: encode {enc:.0f} MB/s, decode {dec:.0f} MB/s")
    w, size = args.work, f"{args.size * 2 + 512}M"
    with (
        tmpfs(f"{w}/src", size) as src,
        tmpfs(f"{w}/d0", size) as d0,
        tmpfs(f"{w}/d1", size) as d1,
        tmpfs(f"{w}/d2", size) as d2,
        tmpfs(f"{w}/d3", size) as d3,
        tmpfs(f"{w}/state", "512M") as state,
        tmpfs(f"{w}/restore", size) as restore,
    ):
        files = 16
        for i in range(files):
            random_file(os.path.join(src, f"f{i:02d}.bin"), (args.size << 20) // files, seed=i)
        nbytes = args.size << 20
        cat = os.path.join(state, "catalog.sqlite")
        env = parbackup_env(cat)
        devs = [d0, d1, d2, d3]
        urls = [f"{d}?limit={args.limit}" if args.limit else d for d in devs]

        def fresh() -> None:
            for d in devs:
                wipe(d)
            for name in os.listdir(state):
                os.unlink(os.path.join(state, name))

        walls, peaks, cpus, befores = [], [], [], []

        def older(plain_wall: float) -> None:
            """The same --parity 1 backup by the older source tree (``--before``)."""
            fresh()
            old = run(
                "4 devices, --parity 1, older source",
                parbackup_argv("backup", src, *_d(urls), "--parity", "1", "--json"),
                env={**env, "PYTHONPATH": args.before},
                check=False,
            )
            if old.code != 0:
                print(f"        older source failed ({old.code}): {old.out[-300:]}")
                return
            befores.append(old.wall / plain_wall)
            print(
                f"        older source, --parity 1 on 4: {old.wall:.2f} s"
                f" ({old.cpu:.2f} CPU s), ratio {befores[-1]:.2f}"
            )

        for i in range(args.pairs):
            fresh()
            plain = run(
                "3 devices",
                parbackup_argv("backup", src, *_d(urls[:3]), "--json"),
                env=env,
                check=False,
            )
            first = args.before and i % 2 == 1  # the older tree first in every other pair
            if first:
                older(plain.wall)
            fresh()
            par = run(
                "4 devices, --parity 1",
                parbackup_argv("backup", src, *_d(urls), "--parity", "1", "--json"),
                env=env,
                check=False,
            )
            if plain.code != 0 or par.code != 0:
                raise SystemExit(f"a backup failed: {plain.code}, {par.code}: {par.out[-500:]}")
            walls.append(par.wall / plain.wall)
            cpus.append(par.cpu / plain.cpu)
            peaks.append(max(plain.rss_mb, par.rss_mb))
            print(
                f"pair {i + 1}: 3 devices {plain.wall:.2f} s ({plain.rate(nbytes):.0f} MB/s,"
                f" {plain.cpu:.2f} CPU s), --parity 1 on 4 {par.wall:.2f} s"
                f" ({par.cpu:.2f} CPU s), ratio {walls[-1]:.2f}; peak RSS {plain.memory}"
                f" / {par.memory} MB; load {os.getloadavg()[0]:.1f}"
            )
            if args.before and not first:
                older(plain.wall)
                fresh()  # the restores below read the current source's set
                run("4 devices, --parity 1", parbackup_argv("backup", src, *_d(urls),
                    "--parity", "1", "--json"), env=env)  # fmt: skip
        # the last backup (with parity) stays for the restores
        ratios = []
        for i in range(args.pairs):
            wipe(restore)
            healthy = run("restore", parbackup_argv("restore", "-t", restore, "--json"), env=env)
            if i == 0 and not same_tree(src, os.path.join(restore, src.lstrip("/"))):
                raise SystemExit("restore differs from the source")
            wipe(restore)
            os.rename(os.path.join(d1, "sets"), os.path.join(d1, "sets.away"))
            try:
                missing = run(
                    "restore, one device missing",
                    parbackup_argv("restore", "-t", restore, "--json"),
                    env=env,
                    check=False,
                )
            finally:
                os.rename(os.path.join(d1, "sets.away"), os.path.join(d1, "sets"))
            if i == 0 and not same_tree(src, os.path.join(restore, src.lstrip("/"))):
                raise SystemExit("restore with a device missing differs from the source")
            ratios.append(healthy.wall / missing.wall)
            peaks.append(max(healthy.rss_mb, missing.rss_mb))
            print(
                f"restore {i + 1}: healthy {healthy.wall:.2f} s, one device missing "
                f"{missing.wall:.2f} s, throughput ratio {ratios[-1]:.2f};"
                f" peak RSS {healthy.memory} / {missing.memory} MB"
            )
        print(
            f"backup wall, --parity 1 on 4 / 3 devices: median {statistics.median(walls):.2f}"
            f" (goal <= 1.15); CPU seconds: median {statistics.median(cpus):.2f}"
        )
        if befores:
            print(
                f"the older source's --parity 1 on 4 / 3 devices: {statistics.median(befores):.2f}"
            )
        print(
            f"restore throughput, one device missing / healthy: median "
            f"{statistics.median(ratios):.2f} (goal >= 0.7)"
        )
        print(f"peak RSS summed over the process tree: {max(peaks):.0f} MB (goal < 200)")
        shutil.rmtree(os.path.join(w), ignore_errors=True)


def _d(devs: list[str]) -> list[str]:
    return [a for d in devs for a in ("-d", d)]


if __name__ == "__main__":
    main()
