"""What one record reference costs the catalog, by how the records table is indexed.

    .venv/bin/python bench/records.py                     # 1,000,000 records
    .venv/bin/python bench/records.py --records 100000

Records reach the catalog in plan order (largest file first), not in file order: the
dispatcher inserts each device's durable records in batches of up to 8192, one
transaction each (catalog/recordrows.py). This inserts ``--records`` such rows, file ids
shuffled, into a fresh catalog that already holds one set of the same size, once with
today's index (``records_by_set``, on set_id) and once with the index it replaced
(``records_by_file``, on set_id and file_id), and prints CPU and wall seconds per row.
No root needed; the catalog goes to ``--work`` (a tmpfs, to leave the disk out).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from common import SRC

sys.path.insert(0, str(SRC))

from parbackup.catalog import Catalog

BATCH = 8192


def fill(catalog: Catalog, set_id: str, label: str, ids: list[int]) -> tuple[float, float]:
    """Insert one record per id, in batches; (CPU s, wall s)."""
    volume = f"sets/{set_id}/{label[:12]}-0001.pbv"
    digest = os.urandom(32)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(ids), BATCH):
        rows = [(i, volume, i * 300, 200, 0, 100, digest, -1) for i in ids[start : start + BATCH]]
        catalog.add_record_rows(set_id, label, rows)
    return time.process_time() - cpu, time.perf_counter() - wall


def one(path: str, index: str, ids: list[int]) -> tuple[float, float]:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    label = os.urandom(16).hex()
    with Catalog(path) as catalog:
        if index == "records_by_file":
            catalog.db.execute("DROP INDEX records_by_set")
            catalog.db.execute("CREATE INDEX records_by_file ON records(set_id, file_id)")
        for _ in range(2):  # an earlier set, then the one measured
            set_id = os.urandom(16).hex()
            catalog.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["/s"])
            took = fill(catalog, set_id, label, ids)
            catalog.finish_set(set_id, status="complete", files=0, nbytes=0, report={}, devices=[])
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--work", default="/dev/shm")
    args = ap.parse_args()
    ids = list(range(args.records))
    random.Random(1).shuffle(ids)
    path = os.path.join(args.work, "bench-records.sqlite")
    print(f"{args.records} records in batches of {BATCH}, file ids in random order")
    for index in ("records_by_set", "records_by_file"):
        cpu, wall = one(path, index, ids)
        n = args.records
        print(f"{index:16s} CPU {cpu:6.2f} s ({1e6 * cpu / n:5.2f} µs a row), wall {wall:6.2f} s")
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


if __name__ == "__main__":
    main()
