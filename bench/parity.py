"""Parity cost (issue 12, REQUIREMENTS K3): the three ratios of the issue, one run.

    .venv/bin/python bench/parity.py --work /tmp/NAME/bench     # 1.25 GiB, 1 + 7 pairs
    .venv/bin/python bench/parity.py --work ... --size 1024 --pairs 11 --restores 0
    .venv/bin/python bench/parity.py --work ... --before /path/to/older/src   # a third kind
    .venv/bin/python bench/parity.py --work ... --limit 100M    # devices slower than the CPUs
    .venv/bin/python bench/parity.py --work ... --size 512 --pairs 0 --disk 40M  # real disks
    .venv/bin/python bench/parity.py --work ... --size 256 --pairs 0 --sftp 100mbit \
        --before /path/to/older/src     # SFTP hosts behind shaped links; old restores too

Every device, the source and the restore target are their own tmpfs (run as root).
Memory: the source and the devices' data, about 2.4x ``--size`` at the peak (the
source is emptied before the restores: its SHA-256 digests stand for it). Prints:
- backup wall, ``--parity 1`` on 4 devices / the same backup on 3 devices without
  parity (goal <= 1.15), and the same ratio of CPU seconds (the machine's 2 cores are
  the bottleneck on tmpfs, so CPU tells what the wall hides under load), per pair and
  as median, quartiles and range over the pairs; with ``--before``, the same
  ``--parity 1`` backup by an older source tree too. The kinds run in turns whose order
  turns round every pair, after ``--warmup`` unmeasured pairs; a backup of the default
  1.25 GiB takes several seconds, so a pair's ratio is no longer at the mercy of one
  scheduler hiccup (512 MiB backups of 0.6-1.0 s made pairs swing by 50%);
- restore throughput with one data device missing / the healthy restore (goal >= 0.7);
- peak RSS summed over the process tree of each run (goal < 200 MB), and the codec's
  own encode and decode speed (MB/s of data per core).

With ``--limit RATE`` every device is held to RATE (``DIR?limit=RATE``, the throttle
wrapper), as disks, tape drives and links are: the devices, not this machine's two
cores, are then the bottleneck, which is what a backup spread over devices meets.
But that throttle holds each open handle, not the device: a restore with a device missing
reads each surviving data device twice (its reader, and the stand-in decoding the
missing one), and each handle gets the rate. With ``--disk RATE`` every device is
instead a directory on its own ext4 file system on a loop device (backing files on one
tmpfs), and each restore runs in a blkio cgroup holding every read of each loop device
to RATE in all, whoever reads (bench/diskdev.py); the devices' pages are dropped from
the page cache before each restore, and the bytes each device gave are printed.
With ``--sftp RATE`` every device is a directory on an SFTP host of its own: a network
namespace whose veth link is shaped with ``tc ... tbf rate RATE`` on both ends
(tests/servers.py), so a link gives its rate once, and the bytes each link carried
towards this host are printed. With ``--before``, the restore with a device missing is
also run by the older tree, in the same turns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
    Measured,
    compile_sources,
    file_digests,
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    tmpfs,
    wipe,
)
from diskdev import ReadLimit, forget, loop_ext4

sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "src")))
sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "tests")))

from parbackup.devices.url import parse_size
from parbackup.redundancy.codec import RowCodec
from parbackup.redundancy.layout import UNIT
from servers import NetnsHost, SshServer


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
    ap.add_argument("--size", type=int, default=1280, help="MiB of source data")
    ap.add_argument("--pairs", type=int, default=7, help="alternating runs of each kind")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured pairs first")
    ap.add_argument("--restores", type=int, default=3, help="restore pairs (0: none)")
    ap.add_argument("--before", default="", help="an older src/ to run --parity 1 with too")
    ap.add_argument("--limit", default="", help="hold every device to this rate (e.g. 100M)")
    ap.add_argument(
        "--disk", default="", help="devices on loop-device ext4, reads held to RATE per device"
    )
    ap.add_argument("--sftp", default="", help="devices on SFTP hosts behind RATE links (100mbit)")
    args = ap.parse_args()
    compile_sources()
    if args.before:
        subprocess.run([sys.executable, "-m", "compileall", "-q", args.before], check=False)
    for k, m in ((3, 1), (4, 2)):
        enc, dec = codec_speed(k, m)
        print(f"codec isa_l_rs_cauchy k={k} m={m}: encode {enc:.0f} MB/s, decode {dec:.0f} MB/s")
    w, size = args.work, f"{args.size + args.size // 2 + 256}M"
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(tmpfs(f"{w}/src", size))
        loops: dict[str, str] = {}
        if args.disk:
            per = args.size // 3 + args.size // 8 + 96  # MiB: a third of the data, + room
            backing = stack.enter_context(tmpfs(f"{w}/backing", f"{4 * per + 64}M"))
            for i in range(4):
                d = f"{w}/d{i}"
                loops[d] = stack.enter_context(loop_ext4(d, backing, per))
            d0, d1, d2, d3 = loops
        else:
            d0, d1, d2, d3 = (stack.enter_context(tmpfs(f"{w}/d{i}", size)) for i in range(4))
        state = stack.enter_context(tmpfs(f"{w}/state", "512M"))
        restore = stack.enter_context(tmpfs(f"{w}/restore", size))
        files = 16
        for i in range(files):
            random_file(os.path.join(src, f"f{i:02d}.bin"), (args.size << 20) // files, seed=i)
        nbytes = args.size << 20
        cat = os.path.join(state, "catalog.sqlite")
        env = parbackup_env(cat)
        devs = [d0, d1, d2, d3]
        urls = [f"{d}?limit={args.limit}" if args.limit else d for d in devs]
        links: list[str] = []  # with --sftp: each host's link, as seen from here
        if args.sftp:
            for i, d in enumerate(devs):
                host = stack.enter_context(NetnsHost(i + 1, rate=args.sftp))
                ssh = SshServer(Path(w) / f"ssh{i}", host=host.ip, port=2222, netns=host.name)
                urls[i] = stack.enter_context(ssh).url(d)
                links.append(host.outer)

        def fresh() -> None:
            for d in devs:
                wipe(d)
            for name in os.listdir(state):
                os.unlink(os.path.join(state, name))

        def backup(kind: str) -> Measured:
            fresh()
            if kind == "plain":
                argv = parbackup_argv("backup", src, *_d(urls[:3]), "--json")
                m = run("3 devices", argv, env=env, check=False)
            else:
                argv = parbackup_argv("backup", src, *_d(urls), "--parity", "1", "--json")
                extra = {"PYTHONPATH": args.before} if kind == "before" else {}
                m = run(f"4 devices, --parity 1 ({kind})", argv, env={**env, **extra}, check=False)
            if m.code != 0:
                raise SystemExit(f"a backup ({kind}) failed: {m.code}: {m.out[-500:]}")
            return m

        kinds = ["plain", "parity"] + (["before"] if args.before else [])
        got: dict[str, list[Measured]] = {k: [] for k in kinds}
        for i in range(args.warmup + args.pairs):
            # the order turns round every pair, so drift (load, page cache) hits each kind
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            done = {k: backup(k) for k in order}
            if i < args.warmup:
                print(f"warm-up {i + 1}: " + ", ".join(f"{k} {done[k].wall:.2f} s" for k in order))
                continue
            for k in kinds:
                got[k].append(done[k])
            plain = done["plain"]
            text = ", ".join(
                f"{k} {done[k].wall:.2f} s / {done[k].cpu:.2f} CPU s"
                + ("" if k == "plain" else f" (x{done[k].wall / plain.wall:.2f}"
                   f" / x{done[k].cpu / plain.cpu:.2f})")
                for k in order
            )  # fmt: skip
            print(
                f"pair {i + 1 - args.warmup}: {text}; {plain.rate(nbytes):.0f} MB/s plain;"
                f" peak RSS {plain.memory} / {done['parity'].memory} MB;"
                f" load {os.getloadavg()[0]:.1f}"
            )
        peaks = [m.rss_mb for ms in got.values() for m in ms]
        for k in kinds[1:] if args.pairs else []:
            walls = [p.wall / q.wall for p, q in zip(got[k], got["plain"], strict=True)]
            cpus = [p.cpu / q.cpu for p, q in zip(got[k], got["plain"], strict=True)]
            print(f"--parity 1 on 4 / 3 devices ({k}): wall {_spread(walls)} (goal <= 1.15)")
            print(f"    CPU seconds {_spread(cpus)}")
            print(
                "    medians of each kind: wall"
                f" {statistics.median(m.wall for m in got[k]):.2f} /"
                f" {statistics.median(m.wall for m in got['plain']):.2f} s, CPU"
                f" {statistics.median(m.cpu for m in got[k]):.2f} /"
                f" {statistics.median(m.cpu for m in got['plain']):.2f} s"
            )

        def restore_run(name: str, check: bool, before: bool = False) -> tuple[Measured, str]:
            """One measured restore (with --disk: from cold devices held to the rate); and
            the MiB each device gave (--disk) or each link carried (--sftp)."""
            argv = parbackup_argv("restore", "-t", restore, "--json")
            renv = {**env, "PYTHONPATH": args.before} if before else env
            if links:
                was = [_rx(link) for link in links]
                m = run(name, argv, env=renv, check=check)
                text = ", ".join(
                    f"d{i} {(_rx(link) - was[i]) / 2**20:.0f}" for i, link in enumerate(links)
                )
                return m, text
            if not loops:
                return run(name, argv, env=renv, check=check), ""
            for d in loops:
                forget(d)
            tag = f"parbackup-parity8-{os.getpid()}-{time.monotonic_ns()}"
            with ReadLimit(list(loops.values()), parse_size(args.disk), tag) as limit:
                m = run(name, limit.wrap(argv), env=renv, check=check)
                got = limit.read_bytes()
            text = ", ".join(
                f"{os.path.basename(d)} {got.get(dev, 0) / 2**20:.0f}" for d, dev in loops.items()
            )
            return m, text

        if args.restores:
            # the restores need no source beside them: its digests stand for it (memory)
            backup("parity")  # the set the restores read
            want = file_digests(src)
            wipe(src)
            ratios, olds = [], []
            for i in range(args.restores):
                wipe(restore)
                healthy, hread = restore_run("restore", check=True)
                if i == 0 and file_digests(os.path.join(restore, src.lstrip("/"))) != want:
                    raise SystemExit("restore differs from the source")
                wipe(restore)
                os.rename(os.path.join(d1, "sets"), os.path.join(d1, "sets.away"))
                try:
                    missing, mread = restore_run("restore, one device missing", check=False)
                    if i == 0 and file_digests(os.path.join(restore, src.lstrip("/"))) != want:
                        raise SystemExit("restore with a device missing differs from the source")
                    if args.before:
                        wipe(restore)
                        old, oread = restore_run("restore (before)", check=False, before=True)
                        if i == 0 and file_digests(os.path.join(restore, src.lstrip("/"))) != want:
                            print(  # e.g. a catalog schema newer than the older tree reads
                                "    before: the older tree did not restore this set whole;"
                                " its restores are left out"
                            )
                            args.before = ""
                        else:
                            olds.append(healthy.wall / old.wall)
                finally:
                    os.rename(os.path.join(d1, "sets.away"), os.path.join(d1, "sets"))
                ratios.append(healthy.wall / missing.wall)
                peaks.append(max(healthy.rss_mb, missing.rss_mb))
                print(
                    f"restore {i + 1}: healthy {healthy.wall:.2f} s, one device missing "
                    f"{missing.wall:.2f} s, throughput ratio {ratios[-1]:.2f};"
                    f" peak RSS {healthy.memory} / {missing.memory} MB;"
                    f" load {os.getloadavg()[0]:.1f}"
                )
                if loops or links:
                    print(f"    MiB read per device, healthy: {hread}; one missing: {mread}")
                if args.before:
                    print(
                        f"    before: one device missing {old.wall:.2f} s, ratio {olds[-1]:.2f},"
                        f" peak RSS {old.memory} MB; MiB read per device: {oread}"
                    )
            print(
                f"restore throughput, one device missing / healthy: {_spread(ratios)} (goal >= 0.7)"
            )
            if olds:
                print(f"    the same by the older tree (--before): {_spread(olds)}")
        print(f"peak RSS summed over the process tree: {max(peaks):.0f} MB (goal < 200)")
    shutil.rmtree(os.path.join(w), ignore_errors=True)


def _spread(values: list[float]) -> str:
    """'median M (quartiles Q1-Q3, range LO-HI, N)' of per-pair ratios."""
    v = sorted(values)
    if len(v) < 4:
        return f"median {statistics.median(v):.2f} (range {v[0]:.2f}-{v[-1]:.2f}, {len(v)})"
    q1, _q2, q3 = statistics.quantiles(v, n=4)
    return (
        f"median {statistics.median(v):.2f} (quartiles {q1:.2f}-{q3:.2f},"
        f" range {v[0]:.2f}-{v[-1]:.2f}, {len(v)} pairs)"
    )


def _rx(link: str) -> int:
    """Bytes a link has received on this side (from its host) so far."""
    return int(Path(f"/sys/class/net/{link}/statistics/rx_bytes").read_text())


def _d(devs: list[str]) -> list[str]:
    return [a for d in devs for a in ("-d", d)]


if __name__ == "__main__":
    main()
