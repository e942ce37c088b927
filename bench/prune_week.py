"""A week of nightly backups with ``forget --keep-daily 3`` and ``prune --max-unused``.

    .venv/bin/python bench/prune_week.py                       # 7 nights, 2 devices
    .venv/bin/python bench/prune_week.py --nights 14 --files 64 --changed 5 --max-unused 10

Each night a few files of the tree get new contents, an incremental backup is taken
under that night's time (``backup --time``), ``forget --keep-daily 3`` retires the
oldest night and ``prune --max-unused`` reclaims: whole dead volumes go, and a
forgotten night's volume that the kept nights still partly read is compacted when more
than the limit of it is unused. Printed per night: the volume bytes on the devices
after the prune, what the kept sets read (each record once), the unused rest, and what
prune deleted and compacted. A second column set runs the same week with
``--max-unused 100`` (never compact) to show what compaction buys. Not timed: the
figures are byte counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from killpoints import volumes_on  # noqa: E402
from parbackup.catalog import Catalog  # noqa: E402


def cli(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", *args, "--json"], capture_output=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"parbackup {' '.join(args)} failed: {proc.stderr.decode()}")
    return json.loads(proc.stdout)


def write_file(path: Path, size: int, seed: int) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


def live_bytes(cat: str) -> int:
    """Bytes of the records the restorable sets read, each record once."""
    with Catalog(cat, create=False) as catalog:
        seen = {}
        for set_id in catalog.root_ids():
            for _, ref in catalog.records(set_id):
                seen[(ref.label, ref.volume, ref.position)] = ref.header_size + ref.size
    return sum(seen.values())


def week(work: Path, args: argparse.Namespace, max_unused: float) -> list[dict]:
    tree = work / "src"
    tree.mkdir()
    devs = [work / f"dev{i}" for i in range(args.devices)]
    for d in devs:
        d.mkdir()
    cat = str(work / "cat.sqlite")
    for i in range(args.files):
        write_file(tree / f"f{i:03d}.bin", args.size, i)
    rows = []
    for night in range(args.nights):
        for k in range(args.changed if night else 0):
            i = (night * args.changed + k) % args.files
            write_file(tree / f"f{i:03d}.bin", args.size, 10_000 * night + i)
        dargs = [a for d in devs for a in ("-d", str(d))]
        when = f"2026-03-{night + 1:02d}T02:00:00+00:00"
        cli("backup", str(tree), *dargs, "--catalog", cat, "--incremental", "--time", when)
        cli("forget", "--keep-daily", "3", "--catalog", cat)
        doc = cli("prune", "--max-unused", str(max_unused), "--catalog", cat)
        acts = [v["action"] for v in doc["volumes"]]
        on = sum(volumes_on(devs).values())
        live = live_bytes(cat)
        rows.append(
            {
                "night": night + 1,
                "on_devices": on,
                "live": live,
                "unused": on - live,
                "deleted": acts.count("delete"),
                "compacted": acts.count("compact"),
                "reclaimed": doc["reclaimed_bytes"],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nights", type=int, default=7)
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--size", type=int, default=256 * 1024)
    ap.add_argument("--changed", type=int, default=4, help="files changed each night")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--max-unused", type=float, default=10)
    args = ap.parse_args()
    tree_mb = args.files * args.size / 2**20
    print(
        f"tree {args.files} files x {args.size} B = {tree_mb:.1f} MiB, {args.changed} changed"
        f" a night, {args.devices} devices, forget --keep-daily 3"
    )
    with tempfile.TemporaryDirectory(prefix="prune-week-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        a = week(Path(tmp) / "a", args, args.max_unused)
        b = week(Path(tmp) / "b", args, 100)
    mib = 2**20
    print(
        f"{'night':>5}  {'on devices':>10}  {'live':>8}  {'unused':>8}  {'del':>3}  {'cmp':>3}"
        f"  {'reclaimed':>9}   | --max-unused 100: {'on devices':>10}  {'unused':>8}"
    )
    for x, y in zip(a, b, strict=True):
        print(
            f"{x['night']:5d}  {x['on_devices'] / mib:8.2f}Mi  {x['live'] / mib:6.2f}Mi"
            f"  {x['unused'] / mib:6.2f}Mi  {x['deleted']:3d}  {x['compacted']:3d}"
            f"  {x['reclaimed'] / mib:7.2f}Mi   |{'':18}{y['on_devices'] / mib:8.2f}Mi"
            f"  {y['unused'] / mib:6.2f}Mi"
        )
    print(f"(--max-unused {args.max_unused:g} on the left; MiB = 2^20 bytes)")


if __name__ == "__main__":
    main()
