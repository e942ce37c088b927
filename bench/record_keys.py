"""What an integer set and label key would save the catalog's ``records`` rows.

    .venv/bin/python bench/record_keys.py --work /dev/shm/NAME-keys [--rows 200000] [--rounds 3]

Inserts ``--rows`` record references (random file order, as a plan's order brings them)
into a fresh WAL catalog table in ``--work`` (put it on tmpfs) the way the dispatcher
does (``insert_rows``, 8192 rows a transaction, the set and label put in front of a
mover's 8-tuples), for three table shapes, alternating: ``text`` (today's: the
32-character set id and label in every row, ``records_by_set`` on the set id), ``int``
(both as small integers, the same index), ``text-no-index`` (today's without
``records_by_set``). Prints CPU microseconds a row (this process) and bytes a row of the
checkpointed file, and the best of the rounds per shape.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from parbackup.catalog.schema import insert_rows

SET = "a" * 32
LABEL = "0123456789abcdef0123456789abcdef"
VOLUME = f"sets/{SET}/{LABEL[:12]}-0001.pbv"
_COLUMNS = (
    "file_id INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,"
    " volume TEXT NOT NULL, position INTEGER NOT NULL, header_size INTEGER NOT NULL,"
    " checksum BLOB NOT NULL, origin_set TEXT NOT NULL DEFAULT '',"
    " origin_file INTEGER NOT NULL DEFAULT -1, stored INTEGER NOT NULL DEFAULT -1"
)
_TEXT = "set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE, label TEXT NOT NULL"
_INDEX = "CREATE INDEX records_by_set ON records(set_id);"
SHAPES = {
    "text": (f"CREATE TABLE records ({_TEXT}, {_COLUMNS}); {_INDEX}", (SET, LABEL)),
    "int": (
        f"CREATE TABLE records (set_id INTEGER NOT NULL, label INTEGER NOT NULL, {_COLUMNS});"
        f" {_INDEX}",
        (1, 1),
    ),
    "text-no-index": (f"CREATE TABLE records ({_TEXT}, {_COLUMNS});", (SET, LABEL)),
}
HEAD = (
    "INSERT INTO records (set_id, label, file_id, volume, position, header_size, offset,"
    " size, checksum, stored)"
)


def connect(path: str) -> sqlite3.Connection:
    """A fresh catalog file at ``path`` (an older one removed), as the catalog opens it:
    WAL, ``synchronous = FULL``, foreign keys on."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON"):
        db.execute(f"PRAGMA {pragma}")
    return db


def fresh(path: str, ddl: str) -> sqlite3.Connection:
    db = connect(path)
    db.execute("CREATE TABLE sets (id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO sets VALUES (?)", (SET,))
    db.executescript(ddl)
    return db


def measure(
    work: str,
    shapes: dict,
    fill: Callable[[sqlite3.Connection, str, object], None],
    rows: int,
    rounds: int,
) -> dict[str, list[tuple[float, int]]]:
    """Each shape of ``shapes`` (name -> (DDL, key)) filled by ``fill`` in a fresh
    catalog in ``work``, the shapes alternating within each of ``rounds`` rounds:
    per shape, (CPU microseconds a row, bytes a row of the checkpointed file) a round."""
    got: dict[str, list[tuple[float, int]]] = {}
    for r in range(rounds):
        for name, (ddl, key) in shapes.items():
            path = f"{work}/{name}.sqlite"
            db = fresh(path, ddl)
            started = time.process_time()
            fill(db, name, key)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            us = (time.process_time() - started) / rows * 1e6
            db.close()
            size = os.path.getsize(path) // rows
            got.setdefault(name, []).append((us, size))
            print(f"round {r} {name}: {us:.2f} us a row, {size} bytes a row", flush=True)
    return got


def setup(rows: int) -> tuple[argparse.Namespace, list[tuple]]:
    """The command line (``rows``: the default of ``--rows``) and a mover's record rows
    (8-tuples) in random file order."""
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    order = list(range(args.rows))
    random.Random(1).shuffle(order)
    digest = os.urandom(32)
    return args, [(f, VOLUME, 620 * k, 120, 0, 500, digest, -1) for k, f in enumerate(order)]


def insert_records(db: sqlite3.Connection, rows: list[tuple], key: tuple) -> None:
    """``rows`` as the dispatcher inserts a mover's: ``key`` in front, 8192 a transaction."""
    for at in range(0, len(rows), 8192):
        db.execute("BEGIN IMMEDIATE")
        insert_rows(db, HEAD, 10, map(key.__add__, rows[at : at + 8192]))
        db.execute("COMMIT")


def main() -> None:
    args, rows = setup(200_000)
    got = measure(
        args.work, SHAPES, lambda db, _name, key: insert_records(db, rows, key), args.rows,
        args.rounds,
    )  # fmt: skip
    for name, runs in got.items():
        print(f"best {name}: {min(us for us, _ in runs):.2f} us a row")


if __name__ == "__main__":
    main()
