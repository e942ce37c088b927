"""What integer set, label and volume keys would save the catalog's files and records rows.

    .venv/bin/python bench/catalog_keys.py --work /dev/shm/NAME-keys [--rows 500000] [--rounds 3]

bench/record_keys.py measured the records rows alone (set and label as integers); this
adds the files rows and a volume number. Each shape is a fresh WAL catalog in ``--work``
(put it on tmpfs), filled the way a backup fills it (``insert_rows``; files in file-id
order, 16384 a transaction, the set as the statement's literal, as ``add_entries``;
records in random file order, 8192 a transaction, set and label in front of a mover's
8-tuples), the shapes alternating within each round:

- ``files-text``: today's files table (WITHOUT ROWID, key (set_id TEXT, file_id));
- ``files-int``: the same keyed by an integer set number;
- ``records-text``: today's records (32-character set id and label, the 59-character
  volume name, ``records_by_set``);
- ``records-int``: set and label as small integers, the volume still its name;
- ``records-int-vol``: set, label and volume all small integers.

Prints CPU microseconds a row (this process) and bytes a row of the checkpointed file,
then the median of the rounds per shape.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from parbackup.catalog.schema import FILES_INSERT
from record_keys import _COLUMNS, LABEL, SET, insert_records, measure, setup

_FILE_COLUMNS = (
    "file_id INTEGER NOT NULL, path BLOB NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL,"
    " mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, link BLOB NOT NULL DEFAULT x'',"
    " state TEXT NOT NULL DEFAULT 'ok', ctime_ns INTEGER NOT NULL DEFAULT 0,"
    " ino INTEGER NOT NULL DEFAULT 0"
)
_INT_RECORDS = _COLUMNS.replace("volume TEXT NOT NULL", "volume INTEGER NOT NULL")
SHAPES = {
    "files-text": (
        "CREATE TABLE files (set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,"
        f" {_FILE_COLUMNS}, PRIMARY KEY (set_id, file_id)) WITHOUT ROWID;",
        SET,
    ),
    "files-int": (
        f"CREATE TABLE files (set_id INTEGER NOT NULL, {_FILE_COLUMNS},"
        " PRIMARY KEY (set_id, file_id)) WITHOUT ROWID;",
        1,
    ),
    "records-text": (
        "CREATE TABLE records (set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,"
        f" label TEXT NOT NULL, {_COLUMNS}); CREATE INDEX records_by_set ON records(set_id);",
        (SET, LABEL),
    ),
    "records-int": (
        f"CREATE TABLE records (set_id INTEGER NOT NULL, label INTEGER NOT NULL, {_COLUMNS});"
        " CREATE INDEX records_by_set ON records(set_id);",
        (1, 1),
    ),
    "records-int-vol": (
        "CREATE TABLE records (set_id INTEGER NOT NULL, label INTEGER NOT NULL,"
        f" {_INT_RECORDS}); CREATE INDEX records_by_set ON records(set_id);",
        (1, 1),
    ),
}


def _literal(v: object) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


def fill(db, name: str, key: object, files: list[tuple], records: tuple[list, list]) -> None:
    if name.startswith("files"):
        one = "(" + _literal(key) + ", " + ", ".join("?" * 11) + ")"  # as add_entries
        for at in range(0, len(files), 16384):
            db.execute("BEGIN IMMEDIATE")
            batch = files[at : at + 16384]
            for k in range(0, len(batch), 256):
                part = batch[k : k + 256]
                db.execute(
                    f"{FILES_INSERT} VALUES " + ", ".join([one] * len(part)),
                    [v for row in part for v in row],
                )
            db.execute("COMMIT")
        return
    insert_records(db, records[name == "records-int-vol"], key)  # type: ignore[arg-type]


def file_rows(n: int) -> list[tuple]:
    """``n`` rows as ``add_entries`` binds them (without the set id): small files of a
    tree of 1000-file directories."""
    root = b"/tmp/million16/tree/"
    return [
        (f, root + b"d%04d/f%06d" % (f // 1000, f), "regular", f % 1024, 0o100644, 0, 0,
         1_764_000_000_000_000_000 + f, b"", 1_764_000_000_000_000_000 + f, 1000 + f)
        for f in range(n)
    ]  # fmt: skip


def main() -> None:
    args, records = setup(500_000)
    numbered = [(r[0], 1, *r[2:]) for r in records]  # the volume as its number
    files = file_rows(args.rows)
    got = measure(
        args.work,
        SHAPES,
        lambda db, name, key: fill(db, name, key, files, (records, numbered)),
        args.rows,
        args.rounds,
    )
    for name, runs in got.items():
        us = statistics.median(u for u, _ in runs)
        print(f"median {name}: {us:.2f} us a row, {runs[-1][1]} bytes a row")


if __name__ == "__main__":
    main()
