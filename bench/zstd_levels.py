#!/usr/bin/env python3
"""zstd's speed and ratio per level on a tree's files, and what ``auto``'s ladder does.

Reads every file of TREE (but those under a directory named ``random``) in 4 MiB
records and compresses them at each level on one core, best of ``--rounds``: MB/s of
CPU and the ratio (a record that does not shrink counts as stored as it is). With
``--small`` the files under 64 KiB by size class (µs per record and bytes saved, counted
as ``auto`` keeps them: at least 1/32 saved). With ``--walk`` the levels ``auto``'s
``Compressor`` walks through on the whole tree (random files included, largest file
first as the plan orders them) when the device takes no time, and the ratio it gives.
``--repetitive`` adds a synthetic stream of lines that differ by a number.

    .venv/bin/python bench/zstd_levels.py TREE --levels 1 -2 -5 -10 -20 -30 -50 --small --walk
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from parbackup.crypto import compress

RECORD = 4 << 20


def files_of(tree: str, random_too: bool) -> list[str]:
    return [
        os.path.join(d, f)
        for d, _dirs, names in os.walk(tree)
        for f in names
        if (random_too or os.path.basename(d) != "random")
        and os.path.isfile(os.path.join(d, f))
        and not os.path.islink(os.path.join(d, f))
    ]


def records(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            while block := fh.read(RECORD):
                out.append(block)
    return out


def levels_table(recs: list[bytes], levels: list[int], rounds: int, what: str) -> None:
    source = sum(map(len, recs))
    print(f"{what}: {len(recs)} records, {source / 1e6:.0f} MB")
    print("| level | MB/s of CPU | ratio |\n| ---: | ---: | ---: |")
    for level in levels:
        zc = zstandard.ZstdCompressor(level=level)
        best, stored = float("inf"), 0
        for _ in range(rounds):
            started, stored = time.process_time(), 0
            for r in recs:
                stored += min(len(zc.compress(r)), len(r))
            best = min(best, time.process_time() - started)
        print(f"| {level} | {source / best / 1e6:.0f} | {source / stored:.2f} |")


def small_table(paths: list[str], levels: list[int], rounds: int) -> None:
    data = []
    for p in paths:
        if os.path.getsize(p) < 64 << 10:
            with open(p, "rb") as fh:
                data.append(fh.read())
    print("| level | record size B | records | MB | µs per record | MB saved |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for level in levels:
        zc = zstandard.ZstdCompressor(level=level)
        for lo, hi in ((64, 512), (512, 1024), (1024, 4096), (4096, 16384), (16384, 65536)):
            recs = [b for b in data if lo <= len(b) < hi]
            best, saved = float("inf"), 0
            for _ in range(rounds):
                started, saved = time.process_time(), 0
                for b in recs:
                    packed = zc.compress(b)
                    if len(packed) <= len(b) - len(b) // compress.AUTO_MIN_SAVING:
                        saved += len(b) - len(packed)
                best = min(best, time.process_time() - started)
            size, mb = sum(map(len, recs)) / 1e6, saved / 1e6
            per = best / max(1, len(recs)) * 1e6
            print(f"| {level} | {lo}-{hi} | {len(recs)} | {size:.1f} | {per:.1f} | {mb:.1f} |")


def walk(paths: list[str]) -> None:
    paths = sorted(paths, key=lambda p: -os.path.getsize(p))
    zc = compress.Compressor(compress.AUTO)
    path, source, stored = [], 0, 0
    started = time.process_time()
    for fid, p in enumerate(paths):
        with open(p, "rb") as fh:
            while block := fh.read(RECORD):
                packed = zc.compress(block, fid)
                source += len(block)
                stored += len(block) if packed is None else len(packed)
                before = zc.level
                zc.wrote(0.0, len(block))
                if zc.level != before:
                    path.append(zc.level)
    print(f"auto on a device that takes no time: CPU {time.process_time() - started:.2f} s, "
          f"ratio {source / stored:.3f}, levels {path}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("--levels", type=int, nargs="+", default=list(compress.AUTO_LADDER))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--walk", action="store_true")
    ap.add_argument("--repetitive", action="store_true")
    args = ap.parse_args()
    paths = files_of(args.tree, random_too=False)
    levels_table(records(paths), args.levels, args.rounds, "files but the random ones")
    if args.repetitive:
        text = b"".join(b"line %d of a compressible record\n" % i for i in range(2_000_000))
        recs = [text[i : i + RECORD] for i in range(0, 64 << 20, RECORD)]
        levels_table(recs, args.levels, args.rounds, "lines that differ by a number")
    if args.small:
        small_table(paths, args.levels, args.rounds)
    if args.walk:
        walk(files_of(args.tree, random_too=True))
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
