"""Per-file CPU of a backup's parts, in one process, for old and new code alternately.

    .venv/bin/python bench/per_file.py --tree DIR [--src OTHER/src ...] [--rounds 2]

Scans ``--tree`` once per code, then times (CPU seconds of this process, best of
``--rounds``), for each ``src`` directory given (default: this checkout's; pass another
checkout's ``src`` to compare, the codes run one after the other in each round, each in
its own child process):

- ``catalog files``: ``Catalog.add_entries`` of every entry, 8192 a transaction, into a
  fresh WAL catalog in ``--work`` (put it on tmpfs);
- ``catalog records``: ``Catalog.add_record_rows`` of one reference per entry, as a
  mover's ``Durable`` batches bring them (8192 a batch);
- ``work items``: the dispatcher's queue of a 2-device plan of the entries drained in
  ``BATCH_ITEMS`` batches, ``WorkQueue.take`` and ``Dispatcher.work_items`` each batch;
- ``mover``: the mover's ``write_item`` for every regular file of 1 B-256 KiB (as
  bench/mover_floor.py's last line), then its commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_CHILD = r"""
import json, os, shutil, sys, time
src, tree, work, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, src)
from parbackup.catalog import Catalog
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.engine import mover as mv
from parbackup.engine.dispatch import BATCH_ITEMS, DeviceState, Dispatcher
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.messages import Begin, MoverSpec
from parbackup.engine.prepare import make_plan, scan, source_specs
from parbackup.engine.report import BackupOptions
from parbackup.entries import FILE
from parbackup.model import Space
assert mv.__file__.startswith(src), mv.__file__
specs = source_specs([tree])
e = scan(specs, [])
n = len(e)

def best(fn):
    t = float("inf")
    for _ in range(rounds):
        c = time.process_time(); fn(); t = min(t, time.process_time() - c)
    return t

def files():
    path = os.path.join(work, "cat.sqlite")
    for s in ("", "-wal", "-shm"):
        if os.path.exists(path + s): os.unlink(path + s)
    with Catalog(path) as cat:
        cat.db.execute("PRAGMA foreign_keys = OFF")
        for a in range(0, n, 8192):
            cat.add_entries("ab" * 16, e, range(a, min(n, a + 8192)))

digest = os.urandom(32)
vol = "sets/" + "ab" * 16 + "/0123456789ab-0001.pbv"
batches = [[(f, vol, 659 * f, 159, 0, 500, digest, -1) for f in range(a, min(n, a + 8192))]
           for a in range(0, n, 8192)]

def records():
    path = os.path.join(work, "cat.sqlite")
    with Catalog(path) as cat:
        cat.db.execute("PRAGMA foreign_keys = OFF")
        cat.db.execute("DELETE FROM records")
        for rows in batches:
            cat.add_record_rows("ab" * 16, "cd" * 16, rows)

plan = make_plan(e, [Space(1 << 50, 1 << 50)] * 2, BackupOptions())

class _Worker:
    channel = None
    def send(self, msg): pass

def items():
    d = Dispatcher.__new__(Dispatcher)
    d.entries, d.feed = e, None
    dev = DeviceState(0, "x", _Worker())
    dev.queue.extend(plan.file, plan.offset, plan.size)
    while dev.queue:
        d.work_items(dev, dev.queue.take_columns(BATCH_ITEMS, 1 << 50, 1 << 50))
        dev.sent.retire(dev.sent.next_seq - 1)

blob, at, roots, links = e.blobs()
small = [f for f in range(n) if e.kind[f] == FILE and 0 < e.size[f] <= 256 * 1024]
work_items = [(seq, f, 0, e.size[f], e.kind[f], e.size[f], e.mode[f], e.uid[f], e.gid[f],
               e.mtime_ns[f], e.ctime_ns[f], e.ino[f], e.dev[f], e.source[f],
               roots.get(e.source[f], b"") + blob[at[f]:at[f + 1]], links.get(f, b""), None, b"")
              for seq, f in enumerate(small, 1)]

class _Channel:
    def send(self, msg): pass
    def poll(self, timeout=0.0): return False

def mover():
    dev = os.path.join(work, "dev")
    shutil.rmtree(dev, ignore_errors=True)
    os.makedirs(dev)
    m = mv._Mover(MoverSpec(0, dev, tuple(specs)), _Channel())
    m.device = RetryingDevice(open_device(dev))
    m.device.open()
    m.label = m.device.ensure_label().label
    m.handle(Begin(os.urandom(16), {"set": "bench"}))
    with paused_gc():
        for item in work_items:
            m.write_item(item)
        m.commit()
    m.device.close()

out = {"entries": n, "files": len(work_items)}
out["catalog files"] = best(files) / n
out["catalog records"] = best(records) / n
out["work items"] = best(items) / len(plan)
out["mover"] = best(mover) / max(1, len(work_items))
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--src", action="append", help="a checkout's src/ (default: this one's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds of the codes")
    ap.add_argument("--work", default="/dev/shm/parbackup-per-file")
    args = ap.parse_args()
    srcs = args.src or [str(HERE.parent / "src")]
    os.makedirs(args.work, exist_ok=True)
    for src in srcs:
        subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True)
    try:
        for r in range(args.repeat):
            for src in srcs if r % 2 == 0 else list(reversed(srcs)):
                load = os.getloadavg()[0]
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, src, args.tree, args.work, str(args.rounds)],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                got = json.loads(done.stdout)
                parts = ", ".join(
                    f"{k} {v * 1e6:.2f} us" for k, v in got.items() if isinstance(v, float)
                )
                print(f"{src}: {parts} ({got['entries']} entries, load {load:.1f})", flush=True)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
