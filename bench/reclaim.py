"""Garbage after killed-and-resumed backups, and what ``prune --orphans`` gives back.

    .venv/bin/python bench/reclaim.py            # 8 kills on a ~160 MB tree, 2 devices
    .venv/bin/python bench/reclaim.py --kills 4 --mb 40

Each run is killed at a seeded byte offset of one device (the faulty device's pause),
after it made some files durable (checkpoints every 4 MiB); the next run resumes it. A
last run completes. Printed: what the devices hold, what the live sets need (their
records plus each volume's framing), after each kill, after the last run, after the
clean-up of the next (incremental) run, and after prune. Not a timed benchmark: the
figures are byte counts.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from killpoints import device_garbage, device_usage, pause_point, wait_paused  # noqa: E402

KILLED_RUN = """
import sys
from parbackup.catalog import Catalog
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup
with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog, BackupOptions(checkpoint_bytes=4 << 20))
"""


def make_tree(root: Path, mb: int, rng: random.Random) -> int:
    total, n = 0, 0
    while total < mb << 20:
        size = rng.randrange(200_000, 4 << 20)
        d = root / f"d{n % 16}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n}.bin").write_bytes(os.urandom(size))
        total, n = total + size, n + 1
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--mb", type=int, default=160)
    args = ap.parse_args()
    rng = random.Random(2026)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="pb-reclaim-") as tmp:
        base = Path(tmp)
        tree = base / "src"
        total = make_tree(tree, args.mb, rng)
        devs = [base / "dev0", base / "dev1"]
        for d in devs:
            d.mkdir()
        cat = str(base / "cat.sqlite")
        share = total // len(devs)
        print(f"tree {total / 1e6:.0f} MB; {args.kills} killed runs, then one that completes")
        for n in range(args.kills):
            gate = base / f"gate{n}"
            fifo = pause_point(gate)
            at = rng.randrange(share // (3 * args.kills), share // args.kills)
            urls = [str(devs[0]), f"faulty+file://{devs[1]}?pause_after={at}&gate={gate}"]
            proc = subprocess.Popen(
                [sys.executable, "-c", KILLED_RUN, cat, str(tree), *urls], env=env
            )
            paused = wait_paused(proc, fifo)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            gate.touch()
            garbage = sum(device_garbage(devs, cat).values())
            print(
                f"kill {n + 1}: {'paused' if paused else 'ended'}; devices hold"
                f" {device_usage(devs) / 1e6:.1f} MB, of which {garbage / 1e6:.1f} MB no"
                " live or pinned set needs"
            )
        dargs = [a for d in devs for a in ("-d", str(d))]
        for what, argv in (
            ("after the last run", ["backup", str(tree), *dargs]),
            ("after an incremental run's clean-up", ["backup", str(tree), *dargs, "--incremental"]),
            ("after prune --orphans", ["prune", "--orphans"]),
        ):
            r = subprocess.run(
                [sys.executable, "-m", "parbackup", *argv, "--catalog", cat, "--json"],
                env=env,
                capture_output=True,
                check=False,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            garbage = sum(device_garbage(devs, cat).values())
            print(
                f"{what}: devices hold {device_usage(devs) / 1e6:.1f} MB (tree"
                f" {total / 1e6:.1f} MB), of which {garbage / 1e6:.1f} MB no live set needs"
            )


if __name__ == "__main__":
    main()
