"""The catalog's records of a million-file backup through ``Catalog`` itself, written and
read back, for code versions compared in alternating rounds.

    .venv/bin/python bench/record_rows.py --work /dev/shm/NAME-rows [--rows 1000000] \\
        [--rounds 3] [--gc paused|on] NAME=SRC [NAME=SRC ...]

Each version (``NAME=SRC``: a ``src`` folder, e.g. main's from ``git archive``) runs in
its own process with ``PYTHONPATH=SRC``, the versions in reverse order every other
round. A process makes a fresh catalog in ``--work`` (put it on tmpfs), begins a set,
and adds ``--rows`` records the way a mover sends them and the dispatcher stores them: a
mover's 8-tuples, 8192 a batch, two devices' labels alternating, file ids in random
order, a new volume ``sets/<set>/<label[:12]>-NNNN.pbv`` every 50,000 records of a
device, as a mover's volume names one string object per volume; each batch made the
version's ``Durable`` and pickled (``send``: the movers' CPU), then unpickled, stored
(``add_record_columns``, or ``add_record_rows`` before session 21) and its sizes summed
(``write``: the dispatcher's CPU). Then it reads them back as a restore does
(``record_rows``, payload records) and as verify does (``records``, by device and
position). Prints CPU seconds of the sends, the writes and each read, the bytes of the
checkpointed catalog and of the pickled messages; then the median per version. The
cyclic collector is paused, as in the dispatcher's loop (engine/dispatch.py) and a
restore (readback/restore.py), unless ``--gc on``: with it on, a batch's temporary
objects (a transposition's iterators) cost collections that a backup does not run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, json, os, pickle, random, sys, time
from operator import itemgetter
from parbackup.catalog import Catalog
from parbackup.engine.messages import Durable
rows_n, work = int(sys.argv[1]), sys.argv[2]
if sys.argv[3] == "paused":  # as the dispatcher writes and a restore reads them
    gc.disable()
path = os.path.join(work, "cat.sqlite")
for suffix in ("", "-wal", "-shm", ".lock"):
    if os.path.exists(path + suffix):
        os.unlink(path + suffix)
set_id = "a" * 32
labels = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]
rng = random.Random(7)
fids = list(range(rows_n))
rng.shuffle(fids)
batches = []  # (label, rows)
names = {}
for at in range(0, rows_n, 8192):
    dev = (at // 8192) % 2
    label = labels[dev]
    batch = []
    for i, fid in enumerate(fids[at : at + 8192]):
        n = (at // 2 + i) // 50_000
        key = (label, n)
        if key not in names:
            names[key] = f"sets/{set_id}/{label[:12]}-{n + 1:04d}.pbv"
        digest = fid.to_bytes(32, "little")
        batch.append((fid, names[key], 4096 + i * 700, 120, 0, 500 + fid % 300, digest, -1))
    batches.append((label, batch))
of = getattr(Durable, "of", None)  # a version whose message carries columns
t = time.process_time()  # the movers' part: each batch made a message and pickled
sent = [(label, pickle.dumps(of(0, b) if of else Durable(0, b), 5)) for label, b in batches]
send = time.process_time() - t
del batches
with Catalog(path) as cat:
    cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["/src"])
    t = time.process_time()  # the dispatcher's: unpickled, stored, its bytes counted
    total = 0
    for label, data in sent:
        msg = pickle.loads(data)
        if of:
            cat.add_record_columns(set_id, label, msg.columns)
            total += sum(msg.sizes)
        else:
            cat.add_record_rows(set_id, label, msg.records)
            total += sum(map(itemgetter(5), msg.records))
    write = time.process_time() - t
    cat.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    t = time.process_time()
    n = sum(1 for _ in cat.record_rows(set_id, payload_only=True))
    rows = time.process_time() - t
    t = time.process_time()
    m = sum(1 for _ in cat.records(set_id))
    refs = time.process_time() - t
    assert n == m == rows_n, (n, m)
print(json.dumps({"send": send, "write": write, "record_rows": rows, "records": refs,
                  "bytes": size, "message_bytes": sum(len(d) for _, d in sent)}))
"""


def in_rounds(child: str, argv: list[str], versions: list[list[str]], rounds: int):
    """``child`` (a ``python -c`` program printing one JSON document) run with ``argv``
    for each version (``[name, src]``: ``PYTHONPATH=src``), the versions in reverse
    order every other round: yields (round, name, document)."""
    for r in range(rounds):
        for name, src in versions if r % 2 == 0 else versions[::-1]:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
            out = subprocess.run(
                [sys.executable, "-c", child, *argv],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            yield r, name, json.loads(out)


def parse_versions(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[list[str]]]:
    """``ap`` with ``--work``, ``--rounds`` and the versions (``NAME=SRC``) added, parsed;
    the work folder made. Returns the arguments and the versions as [name, src]."""
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--gc",
        choices=("paused", "on"),
        default="paused",
        help="the cyclic collector in the timed code: paused as the dispatcher's loop and a"
        " restore pause it (default), or on (these benches' figures before session 20)",
    )
    ap.add_argument("versions", nargs="+", help="NAME=SRC")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    return args, [v.split("=", 1) for v in args.versions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args, versions = parse_versions(ap)
    got: dict[str, list[dict]] = {name: [] for name, _ in versions}
    argv = [str(args.rows), args.work, args.gc]
    for r, name, doc in in_rounds(CHILD, argv, versions, args.rounds):
        got[name].append(doc)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in doc.items() if "bytes" not in k)
        print(f"round {r + 1} {name}: {shown}, bytes {doc['bytes']}", flush=True)
    print("medians:")
    for name, docs in got.items():
        med = {k: statistics.median(d[k] for d in docs) for k in docs[0]}
        per = med["write"] / args.rows * 1e6
        print(
            f"  {name}: send {med['send']:.3f} s, write {med['write']:.3f} s ({per:.2f} us a row),"
            f" record_rows {med['record_rows']:.3f} s, records {med['records']:.3f} s,"
            f" {med['bytes'] / args.rows:.1f} B a row ({med['bytes'] / 1e6:.1f} MB),"
            f" messages {med['message_bytes'] / args.rows:.1f} B a record"
        )


if __name__ == "__main__":
    main()
