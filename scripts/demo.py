"""The demo: a real backup of part of the Python standard library plus a few large
generated files onto three local device directories, then a restore and a byte-for-byte
comparison. Everything lives under ./demo-out (removed and recreated on each run)."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.abspath("demo-out")
STDLIB_PARTS = ["json", "email", "asyncio", "unittest", "xml", "http", "logging", "concurrent"]


def run(*args: str) -> subprocess.CompletedProcess:
    """Run parbackup, echoing the command like a shell would."""
    print("$ parbackup " + " ".join(args), flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", *args], text=True, capture_output="--json" in args
    )
    if proc.returncode not in (0, 3):
        sys.exit(f"demo: parbackup {args[0]} failed with exit code {proc.returncode}")
    return proc


def same_tree(a: str, b: str) -> bool:
    """Compare two trees recursively, file contents included."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(os.path.join(a, d), os.path.join(b, d)) for d in cmp.common_dirs)


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    src = os.path.join(ROOT, "source")
    os.makedirs(src)
    stdlib = sysconfig.get_paths()["stdlib"]
    for part in STDLIB_PARTS:
        shutil.copytree(
            os.path.join(stdlib, part),
            os.path.join(src, "stdlib", part),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    os.makedirs(os.path.join(src, "large"))
    for name, mib in (("video.bin", 48), ("disk.img", 24), ("dump.sql", 12)):
        with open(os.path.join(src, "large", name), "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
    devices = [os.path.join(ROOT, f"device{i}") for i in (1, 2, 3)]
    for d in devices:
        os.makedirs(d)
    catalog = os.path.join(ROOT, "catalog.sqlite")
    dev_args = [a for d in devices for a in ("--device", d)]

    run("plan", src, *dev_args)
    run("backup", src, *dev_args, "--catalog", catalog)
    run("verify", "--catalog", catalog)
    target = os.path.join(ROOT, "restored")
    run("restore", "--target", target, "--catalog", catalog)
    report = json.loads(run("sets", "--catalog", catalog, "--json").stdout)["sets"][-1]

    restored = os.path.join(target, src.lstrip("/"))
    ok = same_tree(src, restored)
    print(
        f"\nbackup set {report['set']}: {report['files']} entries, "
        f"{report['bytes'] / 2**20:.1f} MiB"
    )
    sizes = []
    for d in devices:
        total = sum(
            os.path.getsize(os.path.join(dp, f))
            for dp, _, fs in os.walk(os.path.join(d, "sets"))
            for f in fs
        )
        sizes.append(total)
        print(f"  {d}: {total / 2**20:.2f} MiB of volumes")
    print(f"  balance (largest / smallest device): {max(sizes) / min(sizes):.4f}")
    print(f"restore compared byte for byte with the source: {'IDENTICAL' if ok else 'DIFFERENT'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
