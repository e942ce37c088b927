"""The per-record and per-file objects of a restore, as each checkout builds them,
in-process, checkouts alternating in fresh processes (session 9, restore9).

    .venv/bin/python bench/record_objects.py --catalog CAT --rounds 4 \\
        /path/to/main /path/to/this/checkout

Three steps, each timed as the minimum of ``--repeat`` runs (CPU microseconds per
record or per file; the minimum holds at a load where whole restores swing by more than
these steps cost):

- ``parse``: a reader's ``parse_record_header`` of one record header (a file record with a
  23-byte path), one per record restored;
- ``unpack``: a reader's ``unpack`` of its work into ``(file id, RecordRef)`` pairs, per
  record;
- ``files``: the catalog's ``files()`` of the latest set of ``CAT`` (every file of the set
  as a ``CatalogFile``, which a restore reads before any reader has work), per file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import alternating

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from parbackup.catalog import Catalog
from parbackup.format import KIND_CODES, checksum, encode_record_header, parse_record_header
from parbackup.readback.messages import unpack
repeat = int(sys.argv[3])

def least(step, per):
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        step()
        best = min(best, time.process_time() - t)
    return best / per * 1e6

digest = checksum(b"x" * 3000)
head = encode_record_header(KIND_CODES["file"], bytes(16), 7, 0, 3000, 3000, 0o644, 0, 0,
                            123, digest, b"/some/path/to/a/file.py", b"")
packed = [(i, "v", 0, 100, 0, 3000, digest, "", -1, -1) for i in range(10000)]
catalog = Catalog(sys.argv[2])
sid = catalog.resolve_set("latest").id
rows = sum(1 for _ in catalog.files(sid))

def parse():
    for _ in range(10000):
        parse_record_header(head)

print(json.dumps({
    "parse": least(parse, 10000),
    "unpack": least(lambda: unpack("L", packed), 10000),
    "files": least(lambda: sum(1 for _ in catalog.files(sid)), rows),
    "rows": rows,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("checkouts", nargs="+")
    args = ap.parse_args()
    got: dict[str, list[dict]] = {c: [] for c in args.checkouts}
    for i, order in alternating(args.checkouts, args.rounds):
        for co in order:
            src = f"{co.rstrip('/')}/src"
            argv = [sys.executable, "-c", _CHILD, src, args.catalog, str(args.repeat)]
            out = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
            got[co].append(out)
            print(f"round {i + 1} {co}: " + ", ".join(
                f"{k} {v:.2f} us" for k, v in out.items() if k != "rows"), flush=True)  # fmt: skip
    for co, outs in got.items():
        parts = []
        for k in ("parse", "unpack", "files"):
            values = [o[k] for o in outs]
            parts.append(f"{k} min {min(values):.2f} median {statistics.median(values):.2f} us")
        print(f"{co}: " + ", ".join(parts) + f" ({outs[0]['rows']} files)")


if __name__ == "__main__":
    main()
