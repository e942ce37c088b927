"""Two versions' scan of one tree, in alternating rounds: CPU of the whole scan and of
``Entries.extend_rows`` (the scan's column building, called once per directory).

    .venv/bin/python bench/scan_rows.py TREE --rounds 8 old=/tmp/NAME/old/src new=src

Each round runs every version's ``engine.prepare.scan`` of TREE in a fresh process, one
after the other, so a change of load hits them alike; prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

_CODE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from parbackup import entries
from parbackup.engine.prepare import scan, source_specs
from parbackup.selection import Excluded
spent = [0.0]
extend_rows = entries.Entries.extend_rows
def timed(self, rows):
    c = time.process_time()
    extend_rows(self, rows)
    spent[0] += time.process_time() - c
entries.Entries.extend_rows = timed
specs = source_specs([sys.argv[2]], (), "")
c = time.process_time()
e = scan(specs, [], None, Excluded(), None)
print(time.process_time() - c, spent[0], len(e))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("versions", nargs="+", help="NAME=SRC_DIR")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    got: dict[str, list[tuple[float, float]]] = {n: [] for n, _ in versions}
    for _ in range(args.rounds):
        for name, src in versions:
            argv = [sys.executable, "-c", _CODE, src, args.tree]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            scan_cpu, rows_cpu, n = out.split()
            got[name].append((float(scan_cpu), float(rows_cpu)))
    print(f"{n} entries, {args.rounds} rounds")
    for name, runs in got.items():
        scan_med = statistics.median(a for a, _ in runs)
        rows_med = statistics.median(b for _, b in runs)
        print(f"{name}: scan CPU {scan_med:.3f} s, extend_rows {rows_med:.3f} s (medians)")


if __name__ == "__main__":
    main()
