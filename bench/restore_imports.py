"""The restore controller's imports, checkouts alternated in fresh processes.

    .venv/bin/python bench/restore_imports.py --rounds 20 /path/to/main .

Each run is a fresh interpreter that imports what a restore's controller loads before
``run_restore`` (the CLI, the restore command, readback's restore and core) and prints
its own CPU seconds for them (``time.process_time``): the serial start a restore pays
before any reader has work, measured without the restore around it. A whole-set
restore into a directory imports nothing more later (tests/test_serial_start.py).
Compile each checkout first (``python -m compileall SRC``), as an install would.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess

from common import PY

PROGRAM = (
    "import time\n"
    "t = time.process_time()\n"
    "import parbackup.cli.main, parbackup.cli.restore\n"
    "import parbackup.readback.restore, parbackup.readback.core\n"
    "print(time.process_time() - t)\n"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("checkouts", nargs="+")
    args = ap.parse_args()
    cpu: dict[str, list[float]] = {c: [] for c in args.checkouts}
    for i in range(args.rounds):
        order = args.checkouts if i % 2 == 0 else args.checkouts[::-1]
        for checkout in order:
            env = {**os.environ, "PYTHONPATH": os.path.join(os.path.abspath(checkout), "src")}
            out = subprocess.run(
                [PY, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
            )
            cpu[checkout].append(float(out.stdout))
    for checkout, v in cpu.items():
        print(
            f"{checkout}: imports min {min(v) * 1000:.1f} ms, "
            f"median {statistics.median(v) * 1000:.1f} ms ({len(v)} runs)"
        )


if __name__ == "__main__":
    main()
