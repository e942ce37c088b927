"""What reading extended attributes costs the scan (issue 13, E3).

Scans a tree of N empty files (in a tmpfs) three ways, alternating runs and keeping the
best of each (the machine is shared): attributes read by ``listxattrat`` (the default
on Linux 6.13+), through ``/proc/self/fd`` (older kernels), and once more with an
SELinux-like label on every file (every entry then has a payload to read and keep).
Prints seconds per run, microseconds per entry and the ratios. The figures are ratios
from one run, not assertions.

    .venv/bin/python bench/xattr_scan.py [--files 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from parbackup import xattrs
from parbackup.entries import Entries
from parbackup.sources.base import SourceSpec
from parbackup.sources.local import LocalTree


def make_tree(root: Path, files: int, label: bytes | None) -> None:
    per_dir = 1000
    for d in range(0, files, per_dir):
        folder = root / f"d{d // per_dir}"
        folder.mkdir()
        for i in range(min(per_dir, files - d)):
            p = folder / f"f{i}"
            p.touch()
            if label:
                os.setxattr(p, "security.selinux", label)


def scan(root: Path) -> tuple[float, int, int]:
    spec = SourceSpec(kind="tree", name=str(root), record_root=str(root))
    out = Entries()
    started = time.perf_counter()
    LocalTree(spec).scan(out, 0, lambda p, e: None)
    return time.perf_counter() - started, len(out), out.nbytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="parbackup-xattr-bench-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(base)], check=True)
    try:
        plain, labelled = base / "plain", base / "labelled"
        plain.mkdir()
        labelled.mkdir()
        make_tree(plain, args.files, None)
        make_tree(labelled, args.files, b"system_u:object_r:user_home_t:s0\0")
        at_kernel = xattrs._At.usable
        ways = {
            "no attributes, listxattrat": (plain, True),
            "no attributes, /proc/self/fd": (plain, False),
            "a label on every file, listxattrat": (labelled, True),
        }
        best = dict.fromkeys(ways, float("inf"))
        sizes = {}
        for _ in range(args.runs):
            for name, (root, use_at) in ways.items():
                if use_at and not at_kernel:
                    continue
                xattrs._At.usable = use_at
                seconds, n, nbytes = scan(root)
                best[name] = min(best[name], seconds)
                sizes[name] = (n, nbytes)
        xattrs._At.usable = at_kernel
        first = best["no attributes, listxattrat"]
        print(f"{'scan of a tree':40} {'s':>7} {'us/entry':>9} {'ratio':>6} {'table MB':>9}")
        for name, seconds in best.items():
            n, nbytes = sizes.get(name, (1, 0))
            print(
                f"{name:40} {seconds:7.3f} {seconds / n * 1e6:9.2f} "
                f"{seconds / first:6.2f} {nbytes / 1e6:9.1f}"
            )
    finally:
        subprocess.run(["umount", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
