"""The restore controller's CPU before its readers have their work and after they end,
to the millisecond, checkouts alternating: the serial part of a restore.

    sudo .venv/bin/python bench/restore_serial.py --catalog CAT --target EMPTY_DIR \\
        --rounds 6 /path/to/checkout-a /path/to/checkout-b

Restores the latest set of ``CAT`` (a backup made beforehand, e.g. by
bench/restore_sample.py's tree onto two tmpfs devices) into ``EMPTY_DIR`` (emptied
after each run) through the library (``run_restore``), in a fresh process per run with
each checkout's ``src/``. The child wraps that checkout's ``read_back`` (not its code:
the wrapper only reads ``time.process_time``) and prints, in CPU seconds of the
controller: ``imports`` (the interpreter and parbackup's modules), ``pre`` (from then
until every reader has its work: the ``meanwhile`` callback starts right after it is
sent), ``during`` (the controller's own work while the readers read: directories,
empty files, their answers) and ``post`` (after the readers, until ``run_restore``
returns: split files, links, directory metadata, extended attributes). Process CPU,
not wall: it holds under load where /proc polling (bench/restore_phases.py) and wall
times do not; ``imports + pre + post`` plus the busiest reader is what the wall time
approaches on an idle machine.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time

from common import alternating, wipe

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from parbackup.catalog import Catalog
import parbackup.readback.restore as restore
imported = time.process_time()
stamps = {}
original = restore.read_back
def read_back(*args, **kwargs):
    meanwhile = kwargs.get("meanwhile", lambda: None)
    def sent():
        stamps.setdefault("sent", time.process_time())
        meanwhile()
    kwargs["meanwhile"] = sent
    out = original(*args, **kwargs)
    stamps.setdefault("gathered", time.process_time())
    return out
restore.read_back = read_back
with Catalog(sys.argv[2]) as catalog:
    report = restore.run_restore(catalog, restore.RestoreOptions(target=sys.argv[3]))
done = time.process_time()
assert not report.damaged, report.damaged
print(json.dumps({"imports": imported, "pre": stamps["sent"] - imported,
                  "during": stamps["gathered"] - stamps["sent"],
                  "post": done - stamps["gathered"], "files": report.files}))
"""


def one_run(checkout: str, catalog: str, target: str) -> dict[str, float]:
    """Restore once with ``checkout``'s code; the controller's CPU by phase."""
    src = os.path.join(os.path.abspath(checkout), "src")
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, src, catalog, target],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
    ).stdout
    wall = time.monotonic() - started
    wipe(target)
    return {**json.loads(out.splitlines()[-1]), "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--target", required=True, help="an empty directory (emptied after each run)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("checkouts", nargs="+")
    args = ap.parse_args()
    keys = ("imports", "pre", "during", "post", "wall")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in args.checkouts}
    for checkout in args.checkouts:  # as an installation has them (bench/common.py)
        compileall.compile_dir(os.path.join(checkout, "src"), quiet=2)
    for i, order in alternating(args.checkouts, args.rounds):
        for checkout in order:
            m = one_run(checkout, args.catalog, args.target)
            runs[checkout].append(m)
            shown = " ".join(f"{k} {m[k]:.3f}" for k in keys)
            print(f"round {i + 1} {checkout}: {shown}; load {os.getloadavg()[0]:.1f}", flush=True)
    for checkout, ms in runs.items():
        shown = " ".join(f"{k} {statistics.median(m[k] for m in ms):.3f}" for k in keys)
        print(f"{checkout}: median {shown}")
    if len(args.checkouts) == 2:
        a, b = (runs[c] for c in args.checkouts)
        for k in ("pre", "post"):
            ratios = [round(x[k] / y[k], 2) for x, y in zip(a, b, strict=True)]
            print(f"{k}, first / second, per round: {ratios}")


if __name__ == "__main__":
    main()
