#!/usr/bin/env python3
"""Issue 15 target: planning and cataloguing a million files on PostgreSQL against SQLite.

    sudo .venv/bin/python bench/pgcatalog.py                  # 1,000,000 files
    sudo .venv/bin/python bench/pgcatalog.py --files 100000   # a quick try

Both backends do the same work, in this one process, with the engine's own calls and
batch sizes, on a synthetic scan table (no files are read: the catalog is what is
measured):

1. **a full backup**: the plan (``make_plan``, pure, the same on both); cataloguing: the
   set begun, its files in the engine's batches (``add_entries``, 16384 a batch), every
   planned item as a durable record in the movers' batches (``add_record_rows``, 512 a
   message, two devices), ``finish_set``; the catalog copy the backup puts on its
   devices (``copy_to``, always a SQLite file);
2. **an incremental backup** where 1 % changed: planning loads the parent set back from
   the catalog (``incremental_reuse``: every file and record of the million) and plans
   the changed files; cataloguing writes the million files again, the reused records
   (``add_records``) and the new ones.

The PostgreSQL server is a throwaway cluster from the Debian package (tests/pgserver.py)
with ``fsync=on``, on loopback TCP like a shared server; the SQLite catalog sits on the
same filesystem with its usual ``synchronous=FULL``. The goal: PostgreSQL within 2x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from common import conditions, table  # noqa: E402
from parbackup.catalog import Catalog, open_catalog  # noqa: E402
from parbackup.engine.incremental import incremental_reuse  # noqa: E402
from parbackup.engine.prepare import make_plan  # noqa: E402
from parbackup.engine.report import BackupOptions  # noqa: E402
from parbackup.entries import Entries  # noqa: E402
from parbackup.model import DeviceReport, Plan, Space  # noqa: E402
from parbackup.plan.reuse import Reuse  # noqa: E402
from pgserver import PgServer  # noqa: E402

FILE_BATCH, RECORD_BATCH = 16384, 512
SOURCE = "/data"
SPACES = [Space(free=1 << 50, capacity=1 << 50)] * 2


def scan_table(n: int, changed_every: int = 0) -> Entries:
    """``n`` regular files of 0-64 KiB in 1000-file directories (every ``changed_every``-th
    one with a newer mtime, as an incremental scan would find it)."""
    entries = Entries()
    for i in range(n):
        mtime = 10**18 + i + (1 if changed_every and i % changed_every == 0 else 0)
        path = f"{SOURCE}/d{i // 1000:04d}/file-{i:07d}.dat".encode()
        entries.append(path, 0, (i * 7919) % 65536, 0o100644, 1000, 1000, mtime, mtime, i + 1)
    return entries


def plan_full(entries: Entries) -> tuple[Plan, Reuse]:
    return make_plan(entries, SPACES, BackupOptions()), Reuse()


def plan_incremental(cat: Catalog, entries: Entries) -> tuple[Plan, Reuse]:
    """The parent found and loaded back (every file and record), what changed selected,
    and the plan of the changed files."""
    reuse = incremental_reuse(cat, [SOURCE], entries)
    assert reuse is not None and reuse.files
    return make_plan(entries, SPACES, BackupOptions(), frozenset(reuse.files)), reuse


def catalogue(cat: Catalog, set_id: str, entries: Entries, plan: Plan, reuse: Reuse) -> None:
    """What a backup writes to the catalog: the set, its files in the engine's batches,
    the reused records, every planned item as a durable record in the movers' batches
    (two devices), the end of the set."""
    cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=[SOURCE])
    for start in range(0, len(entries), FILE_BATCH):
        cat.add_entries(set_id, entries, range(start, min(start + FILE_BATCH, len(entries))))
    if reuse.records:
        cat.add_records(set_id, reuse.records)
    position = [0, 0]
    batches: list[list[tuple]] = [[], []]
    for k in range(len(plan)):
        dev, size = plan.device[k], plan.size[k]
        batches[dev].append(
            (plan.file[k], f"{set_id}-v{dev}", position[dev], 96, plan.offset[k], size, b"\1" * 32)
        )
        position[dev] += 96 + size
        if len(batches[dev]) == RECORD_BATCH:
            cat.add_record_rows(set_id, f"label{dev}", batches[dev])
            batches[dev] = []
    for dev, rows in enumerate(batches):
        if rows:
            cat.add_record_rows(set_id, f"label{dev}", rows)
    devices = [DeviceReport(f"file:///dev{d}", f"label{d}") for d in range(2)]
    cat.finish_set(set_id, status="complete", files=len(entries), nbytes=0, report={},
                   devices=devices)  # fmt: skip


def measure(target: str, full: Entries, changed: Entries, scratch: str) -> dict[str, float]:
    """Seconds per phase of a full backup and an incremental one on the catalog."""
    out: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        out[name] = time.perf_counter() - t
        return result

    with open_catalog(target) as cat:
        for d in range(2):
            cat.remember_device(f"label{d}", f"file:///dev{d}", "file")
        plan, reuse = timed("full: plan", plan_full, full)
        timed("full: catalogue", catalogue, cat, "a" * 32, full, plan, reuse)
        timed("full: copy to devices", cat.copy_to, os.path.join(scratch, f"c{len(out)}.sqlite"))
        plan, reuse = timed("incremental: plan", plan_incremental, cat, changed)
        timed("incremental: catalogue", catalogue, cat, "b" * 32, changed, plan, reuse)
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    args = ap.parse_args()
    print(conditions())
    t = time.perf_counter()
    entries, changed = scan_table(args.files), scan_table(args.files, changed_every=100)
    print(f"scan tables of {args.files:,} files made in {time.perf_counter() - t:.1f} s")
    os.makedirs("/tmp/pg", exist_ok=True)
    with tempfile.TemporaryDirectory(dir="/tmp/pg") as scratch, PgServer(fsync=True) as pg:
        lite = measure(os.path.join(scratch, "catalog.sqlite"), entries, changed, scratch)
        post = measure(pg.create_db("bench"), entries, changed, scratch)
    rows = [
        [phase, f"{lite[phase]:.2f}", f"{post[phase]:.2f}", f"{post[phase] / lite[phase]:.2f}x"]
        for phase in lite
    ]
    print(table(["phase", "SQLite s", "PostgreSQL s", "PostgreSQL / SQLite"], rows))
    ratio = post["total"] / lite["total"]
    verdict = "within" if ratio <= 2 else "NOT within"
    print(f"\n{args.files:,} files: PostgreSQL / SQLite = {ratio:.2f}x ({verdict} the 2x goal)")


if __name__ == "__main__":
    main()
