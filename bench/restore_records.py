"""The records step of a restore before its readers start, as each checkout does it,
in-process, checkouts alternating: the part session 8 made columnar.

    .venv/bin/python bench/restore_records.py --catalog CAT --rounds 5 \\
        /path/to/main /path/to/this/checkout

For the latest set of ``CAT``: the set's payload records read, the per-file maps a
restore builds from them (readback/restore.py ``_restore_files``: coverage, devices per
file, origins, the readers' lists) and what is sent to the readers. A checkout with
``packed_by_label`` (readback/select.py) takes the catalog's rows as the readers' tuples;
one without builds a ``RecordRef`` per record (``records_by_label``) and packs them. Each
round runs every checkout in a fresh process, ``--runs`` times; prints the minimum and
median CPU milliseconds. In-process CPU: it holds at a load where a whole restore's
figures swing by more than the step costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import alternating

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from parbackup.catalog import Catalog
from parbackup.model import Kind
from parbackup.readback import select as S
from parbackup.readback.messages import pack
catalog = Catalog(sys.argv[2])
sid = catalog.resolve_set("latest").id
files = [f for f in catalog.files(sid) if f.entry.kind is Kind.FILE]
fids = {f.file_id for f in files}
columnar = hasattr(S, "packed_by_label")

def step():
    if columnar:
        records = S.packed_by_label(catalog, sid, fids)
        spans, labels = {}, {}
        for label, recs in records.items():
            for rec in recs:
                got = spans.get(rec[0])
                if got is None:
                    spans[rec[0]], labels[rec[0]] = [(rec[4], rec[5])], {label}
                else:
                    got.append((rec[4], rec[5]))
                    labels[rec[0]].add(label)
        whole = [f for f in files if S.covered_spans(spans.get(f.file_id, []), f.entry.size)]
        origins = {rec[7] for recs in records.values() for rec in recs if rec[7]}
        return {label: [rec for rec in recs if rec[0] in fids] for label, recs in records.items()}
    records = S.records_by_label(catalog, sid, fids)
    refs, labels = {}, {}
    for label, recs in records.items():
        for fid, ref in recs:
            got = refs.get(fid)
            if got is None:
                refs[fid], labels[fid] = [ref], {label}
            else:
                got.append(ref)
                labels[fid].add(label)
    whole = [f for f in files if S.covered(refs.get(f.file_id, []), f.entry.size)]
    origins = {r.origin_set for recs in records.values() for _f, r in recs if r.origin_set}
    work = {label: [(f, r) for f, r in recs if f in fids] for label, recs in records.items()}
    return {label: pack(w) for label, w in work.items()}

times = []
for _ in range(int(sys.argv[3])):
    started = time.process_time()
    step()
    times.append(time.process_time() - started)
print(json.dumps(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5, help="runs of the step per process")
    ap.add_argument("checkouts", nargs="+")
    args = ap.parse_args()
    times: dict[str, list[float]] = {c: [] for c in args.checkouts}
    for i, order in alternating(args.checkouts, args.rounds):
        for checkout in order:
            src = os.path.join(os.path.abspath(checkout), "src")
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, src, args.catalog, str(args.runs)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            times[checkout] += json.loads(out)
        print(f"round {i + 1} done; load {os.getloadavg()[0]:.1f}", flush=True)
    for checkout, ts in times.items():
        print(
            f"{checkout}: min {1000 * min(ts):.1f} ms, median {1000 * statistics.median(ts):.1f}"
            f" ms ({len(ts)} runs)"
        )


if __name__ == "__main__":
    main()
