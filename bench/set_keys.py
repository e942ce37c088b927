"""The set as a number (a schema 6): the dispatcher's own statements against today's.

    .venv/bin/python bench/set_keys.py --work /dev/shm/NAME-keys [--rows 1000000] [--rounds 3]

bench/catalog_keys.py compared key shapes with rows that carried their keys as bound
values and integer tables without foreign keys. This one writes what a backup writes,
the way it writes it today (schema 5: ``insert_rows`` with the set id as the
statement's literal; a mover's 8-tuples with the volume's number, 8192 a transaction,
in random file order; the files rows of ``add_entries``, 16384 a
transaction), into fresh WAL catalogs in ``--work`` (put it on tmpfs), for these shapes,
alternating within each round. (Session 18's figures mapped the volume to its number in
SQL; since session 20 the dispatcher writes a batch's one-valued columns, the volume
among them, as literals: catalog/schema.py's ``one_valued``. Here every value but the
set is bound, in every shape alike: the shapes compare keys.)

- ``5``: today's tables (catalog/schema.py's ``files`` and ``records``, the foreign key
  to ``sets(id)``, a 32-character text key, checked per row; ``records_by_set``);
- ``6-fk``: the set as ``sets.num`` (INTEGER PRIMARY KEY) in both tables, the foreign
  key kept (``REFERENCES sets(num) ON DELETE CASCADE``: a rowid lookup per row), the
  number the statement's literal;
- ``6``: the same without the foreign key (what catalog_keys.py measured).

Prints CPU microseconds a row (this process) and bytes a row of the checkpointed file,
per table, then the median of the rounds.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_keys import file_rows
from parbackup.catalog.schema import FILES_INSERT, RECORDS_COLUMNS, SCHEMA, insert_rows
from record_keys import SET, connect, setup

_RECORDS = (
    "INSERT INTO records (set_id, file_id, vol, position, header_size, offset, size,"
    " checksum, stored)"
)  # recordrows.py's, for a mover's rows
_FILES_DDL = SCHEMA.split("CREATE TABLE IF NOT EXISTS files ")[1].split(";")[0]


def _six(ddl: str, fk: bool) -> str:
    key = "set_id INTEGER NOT NULL" + (" REFERENCES sets(num) ON DELETE CASCADE" if fk else "")
    return ddl.replace("set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE", key)


SHAPES = {
    "5": (_FILES_DDL, RECORDS_COLUMNS, SET),
    "6-fk": (_six(_FILES_DDL, True), _six(RECORDS_COLUMNS, True), 1),
    "6": (_six(_FILES_DDL, False), _six(RECORDS_COLUMNS, False), 1),
}


def fresh(path: str, files_ddl: str, records_ddl: str) -> sqlite3.Connection:
    db = connect(path)
    db.execute("CREATE TABLE sets (num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)")
    db.execute("INSERT INTO sets VALUES (1, ?)", (SET,))
    db.execute("CREATE TABLE volumes (num INTEGER PRIMARY KEY, label TEXT, name TEXT)")
    db.execute(f"CREATE TABLE files {files_ddl}")
    db.execute(f"CREATE TABLE records {records_ddl}")
    db.execute("CREATE INDEX records_by_set ON records(set_id)")
    return db


def _insert(db, head: str, ncols: int, rows, key) -> None:
    """``insert_rows`` with ``key`` the statement's literal: a text set id as today, or
    a number (``insert_rows`` takes only text literals: the number goes into ``head``'s
    VALUES by a stand-in text replaced in each statement)."""
    if isinstance(key, str):
        insert_rows(db, head, ncols, rows, (key,))
        return

    class Numbered:  # the statements insert_rows makes, with the stand-in replaced
        def __init__(self, db):
            self.db = db

        def execute(self, sql, values):
            return self.db.execute(sql.replace("'#set#'", str(key)), values)

    insert_rows(Numbered(db), head, ncols, rows, ("#set#",))


def fill(db, key, files: list[tuple], records: list[tuple]) -> tuple[float, float]:
    """CPU seconds of the files rows and of the records rows."""
    t = time.process_time()
    for at in range(0, len(files), 16384):
        db.execute("BEGIN IMMEDIATE")
        _insert(db, FILES_INSERT, 11, files[at : at + 16384], key)
        db.execute("COMMIT")
    f = time.process_time() - t
    t = time.process_time()
    for at in range(0, len(records), 8192):
        db.execute("BEGIN IMMEDIATE")
        _insert(db, _RECORDS, 8, records[at : at + 8192], key)
        db.execute("COMMIT")
    return f, time.process_time() - t


def main() -> None:
    args, records = setup(1_000_000)
    records = [(r[0], 1, *r[2:]) for r in records]  # number 1 (as session 18 mapped it)
    files = file_rows(args.rows)
    random.Random(2).shuffle(records)
    got: dict[str, list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        order = list(SHAPES) if r % 2 == 0 else list(SHAPES)[::-1]
        for name in order:
            files_ddl, records_ddl, key = SHAPES[name]
            path = f"{args.work}/{name}.sqlite"
            db = fresh(path, files_ddl, records_ddl)
            f, rec = fill(db, key, files, records)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fb = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'files'").fetchone()[0]
            rb = db.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('records', 'records_by_set')"
            ).fetchone()[0]
            db.close()
            n = args.rows
            got.setdefault(name, []).append((f / n * 1e6, rec / n * 1e6, (fb / n, rb / n)))
            print(
                f"round {r} {name}: files {f / n * 1e6:.2f} us a row, {fb / n:.1f} B;"
                f" records {rec / n * 1e6:.2f} us a row, {rb / n:.1f} B",
                flush=True,
            )
    med = statistics.median
    print("| shape | files: us a row | B a row | records: us a row | B a row |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in got.items():
        print(
            f"| {name} | {med(x[0] for x in runs):.2f} | {runs[-1][2][0]:.1f}"
            f" | {med(x[1] for x in runs):.2f} | {runs[-1][2][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
