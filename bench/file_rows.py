"""The catalog's files rows of a scanned tree through ``Catalog.add_entries``, for code
versions compared in alternating rounds.

    .venv/bin/python bench/file_rows.py --work /dev/shm/NAME-files --tree TREE \\
        [--rounds 3] [--gc paused|on] NAME=SRC [NAME=SRC ...]

Each version (``NAME=SRC``: a ``src`` folder, e.g. main's from ``git archive``) runs in
its own process with ``PYTHONPATH=SRC``, the versions in reverse order every other round.
A process scans ``TREE`` (not timed), makes a fresh catalog in ``--work`` (put it on
tmpfs), begins a set and adds the entries as a backup's dispatcher does (16384 a
transaction). Prints the CPU seconds of the writes and the bytes of the checkpointed
catalog; then the median per version (bench/record_rows.py does the same for records,
and says what ``--gc`` is).
"""

from __future__ import annotations

import argparse
import statistics

from record_rows import in_rounds, parse_versions

CHILD = r"""
import gc, json, os, sys, time
from parbackup.catalog import Catalog
from parbackup.engine.prepare import scan, source_specs
tree, work = sys.argv[1], sys.argv[2]
if sys.argv[3] == "paused":  # as the dispatcher writes them (engine/dispatch.py)
    gc.disable()
path = os.path.join(work, "files.sqlite")
for suffix in ("", "-wal", "-shm", ".lock"):
    if os.path.exists(path + suffix):
        os.unlink(path + suffix)
entries = scan(source_specs([tree]), [])
set_id, n = "a" * 32, len(entries)
with Catalog(path) as cat:
    cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=[tree])
    t = time.process_time()
    for start in range(0, n, 16384):
        cat.add_entries(set_id, entries, range(start, min(n, start + 16384)))
    write = time.process_time() - t
    cat.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(json.dumps({"write": write, "rows": n, "bytes": os.path.getsize(path)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    args, versions = parse_versions(ap)
    got: dict[str, list[dict]] = {name: [] for name, _ in versions}
    for r, name, doc in in_rounds(CHILD, [args.tree, args.work, args.gc], versions, args.rounds):
        got[name].append(doc)
        print(f"round {r + 1} {name}: write {doc['write']:.3f} s, {doc['rows']} rows,"
              f" bytes {doc['bytes']}", flush=True)  # fmt: skip
    print("medians:")
    for name, docs in got.items():
        write = statistics.median(d["write"] for d in docs)
        rows = docs[0]["rows"]
        print(f"  {name}: write {write:.3f} s ({write / rows * 1e6:.2f} us a row),"
              f" {docs[0]['bytes'] / rows:.1f} B a row")  # fmt: skip


if __name__ == "__main__":
    main()
