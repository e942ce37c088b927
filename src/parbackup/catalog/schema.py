"""The catalog's tables, their migrations, and how rows go in (batched statements).

``store.Catalog`` holds the connection and the operations; this module holds what
``CREATE TABLE`` says and the helpers every write uses.
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice

SCHEMA_VERSION = 5
"""1: first release. 2: files.ctime_ns/ino (incremental change detection), and
records.origin_set/origin_file (records an incremental set reuses from earlier sets).
3: sets.resumed (the interrupted set a run resumed; see catalog/liveness.py).
4: records.stored (payload bytes on the device of a compressed or encrypted record);
file_meta (files' extended attributes); progress (per-device samples of a backup, for
``report``). 5: ``volumes`` (a number per device label and volume name); records hold
that number (``vol``) instead of the label and volume text, and are read through the
``record_places`` view, which gives them back (``PLACES_VIEW``)."""

REBUILDING_KEY = "rebuilding"
"""A ``meta`` key rebuild-catalog sets while it writes a catalog (engine/rebuild.py):
such a catalog is partial, and nothing may be deleted on its word (prune refuses it)."""

# Columns added after schema 1: (table, column, declaration). Opening an older catalog
# adds the missing ones (see ``_migrate``); a fresh catalog gets them from SCHEMA.
ADDED_COLUMNS = (
    ("files", "ctime_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "ino", "INTEGER NOT NULL DEFAULT 0"),
    ("records", "origin_set", "TEXT NOT NULL DEFAULT ''"),
    ("records", "origin_file", "INTEGER NOT NULL DEFAULT -1"),
    ("sets", "resumed", "TEXT NOT NULL DEFAULT ''"),
    ("records", "stored", "INTEGER NOT NULL DEFAULT -1"),
)

RECORDS_COLUMNS = """(
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    file_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    vol INTEGER NOT NULL,
    position INTEGER NOT NULL,
    header_size INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    origin_set TEXT NOT NULL DEFAULT '',
    origin_file INTEGER NOT NULL DEFAULT -1,
    stored INTEGER NOT NULL DEFAULT -1
)"""
"""The ``records`` table of schema 5 (made by ``SCHEMA``, and by ``MIGRATE_5``)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sets (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    created TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'full',
    parent TEXT,
    strategy TEXT NOT NULL,
    ordering TEXT NOT NULL,
    threshold INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    reused INTEGER NOT NULL DEFAULT 0,
    sources TEXT NOT NULL,
    report TEXT,
    resumed TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS devices (
    label TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    speed REAL
);
CREATE TABLE IF NOT EXISTS set_devices (
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL DEFAULT 0,
    segments INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (set_id, label)
);
CREATE TABLE IF NOT EXISTS files (
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    file_id INTEGER NOT NULL,
    path BLOB NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    link BLOB NOT NULL DEFAULT x'',
    state TEXT NOT NULL DEFAULT 'ok',
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    ino INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (set_id, file_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS volumes (
    num INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (label, name)
);
CREATE TABLE IF NOT EXISTS records {records};
CREATE INDEX IF NOT EXISTS records_by_set ON records(set_id);
DROP INDEX IF EXISTS records_by_file;
CREATE TABLE IF NOT EXISTS file_meta (
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    file_id INTEGER NOT NULL,
    meta BLOB NOT NULL,
    PRIMARY KEY (set_id, file_id)
);
CREATE TABLE IF NOT EXISTS progress (
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    seconds REAL NOT NULL,
    device TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    event TEXT NOT NULL DEFAULT 'bytes',
    redirected INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (set_id, seq)
);
""".replace("{records}", RECORDS_COLUMNS)
# files WITHOUT ROWID: the rows are kept in their primary key's order, so the key is
# stored once, not in the table and again in an index of its own (a million files: the
# table and its index 172 -> 132 bytes a file, the catalog ~10% smaller, and one
# B-tree written per row instead of two). Only new catalogs get it (CREATE ... IF NOT
# EXISTS); an older catalog's files table answers the same SQL, so the version did not
# change. Every query of files names the set and orders by file id, or needs no order.
# records_by_set: every query of records names the set. The index it replaces
# (records_by_file, on set_id and file_id) took each insert to a random place, since
# records arrive in plan order, not file order: a million records cost 12 us each
# instead of 2. Only an index changed, so the schema version did not.
# volumes (schema 5): a record's device label and volume name were 91 of its 242 bytes
# (`sets/<set id>/<label[:12]>-NNNN.pbv`, the set id again); a record now holds the
# volume's number. A name cannot be derived from the set and label (compaction's copies
# are `x.c1.pbv`, liveness.compacted_name), so each (label, name) gets a row, made the
# first time a record names it (``volume_numbers``). A row no record points to any more
# is dropped when records are deleted (``drop_unused_volumes``).
# file_meta: a file's extended attributes (ACLs, capabilities, ...) as the kind-8 payload
# of parbackup/xattrs.py, for the few files that have any. progress: bounded per-device
# samples of a backup, for ``report``. Both are made by every opening (IF NOT EXISTS), so
# older catalogs gain them.


ORIGIN_INDEX = (
    "CREATE INDEX IF NOT EXISTS records_by_origin ON records(origin_set, set_id)"
    " WHERE origin_set != ''"
)
"""Finds the records that lie in other sets' volumes (liveness); made after ``_migrate``
because older catalogs gain ``origin_set`` there."""

PLACE_COLUMNS = (
    "set_id, file_id, offset, size, label, volume, position, header_size, checksum,"
    " origin_set, origin_file, stored"
)
"""What ``record_places`` shows of a record: its row as it was up to schema 4."""
PLACES_VIEW = (
    "CREATE VIEW IF NOT EXISTS record_places AS SELECT r.set_id, r.file_id, r.offset, r.size,"
    " v.label, v.name AS volume, r.position, r.header_size, r.checksum, r.origin_set,"
    " r.origin_file, r.stored FROM records r JOIN volumes v ON v.num = r.vol"
)
"""Every read of records goes through this view: the rows keep their schema-4 shape.
Made after ``_migrate`` (the view names ``records.vol``). A catalog of schema 4 opened
read-only gets a TEMP view of the same name over its own table (``PLACES_V4``)."""
PLACES_V4 = f"CREATE TEMP VIEW record_places AS SELECT {PLACE_COLUMNS} FROM main.records"

MIGRATE_5 = (
    "INSERT INTO volumes (label, name) SELECT DISTINCT label, volume FROM records"
    " ORDER BY label, volume",
    f"CREATE TABLE records_5 {RECORDS_COLUMNS}",
    "INSERT INTO records_5 SELECT r.set_id, r.file_id, r.offset, r.size, v.num, r.position,"
    " r.header_size, r.checksum, r.origin_set, r.origin_file, r.stored FROM records r"
    " JOIN volumes v ON v.label = r.label AND v.name = r.volume ORDER BY r.rowid",
    "DROP TABLE records",
    "ALTER TABLE records_5 RENAME TO records",
    "CREATE INDEX records_by_set ON records(set_id)",
)
"""Schema 4 -> 5 (SQLite): a volumes row per (label, name) the records name, and the
records rewritten with its number, in their order (the opening's one transaction)."""


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


FILES_INSERT = (
    "INSERT INTO files (set_id, file_id, path, kind, size, mode, uid, gid, mtime_ns, link,"
    " ctime_ns, ino)"
)
BATCH_ROWS = 256

sqlite3.register_adapter(bytes, bytes.__bytes__)
"""A bytes value (a file's path and link, a record's checksum: three a file of a backup)
bound as itself, as before, but found in the sqlite3 module's adapters at once. The
module binds int, float, str and bytearray directly and sends every other value, bytes
too, through its adapter protocol: with no adapter registered, the look-up of
``PrepareProtocol.__adapt__`` raises and clears an AttributeError with a formatted
message per value (~0.18 us: 0.5 CPU s of a million-file backup's controller). The
identity adapter (``bytes.__bytes__`` gives an exact bytes object back) skips it; a
process-wide registration, but one that changes no value."""


def insert_rows(
    db: sqlite3.Connection,
    head: str,
    ncols: int,
    rows: Iterable[tuple],
    fixed: tuple = (),
) -> None:
    """``head VALUES (...), (...), ...`` with up to BATCH_ROWS rows per statement.

    Faster than ``executemany`` when other threads are busy: the sqlite3 module lets go
    of the GIL for every statement it steps, and getting it back from busy device writers
    once per row cost more than the inserts themselves (67k files: 1.1 s against 0.55 s).
    The rows of a statement are flattened by ``chain``/``islice`` (no Python loop per
    row: 0.3-0.5 us a row of a million-file backup's files and records).

    ``fixed``: values that the first columns of ``head`` take in every row (text, int
    or bytes), written in the statement as literals (rows then hold the other ``ncols``
    values): no tuple made per row to put them in front, nor bound per row (a mover's
    records: 10-15% less). ``one_valued`` gives rows as columns this shape.
    """
    one = "(" + "".join(f"{_literal(v)}, " for v in fixed) + ", ".join(["?"] * ncols) + ")"
    full = f"{head} VALUES " + ", ".join([one] * BATCH_ROWS)
    rows = iter(rows)
    while batch := list(chain.from_iterable(islice(rows, BATCH_ROWS))):
        if len(batch) == ncols * BATCH_ROWS:
            db.execute(full, batch)
        else:
            db.execute(f"{head} VALUES " + ", ".join([one] * (len(batch) // ncols)), batch)


def _literal(value: str | int | bytes) -> str:
    """A value as an SQL literal: text (quotes doubled; none with NUL), a 64-bit int in
    decimal, bytes as ``X'hex'``. Anything else is refused."""
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return str(value)  # SQLite reads -9223372036854775808 as the integer it is
    if type(value) is bytes:
        return f"X'{value.hex()}'"
    if not isinstance(value, str) or "\0" in value:
        raise ValueError(f"not a literal for a statement: {value!r}")
    return "'" + value.replace("'", "''") + "'"


_INT64 = (-(1 << 63), (1 << 63) - 1)
ONE_VALUE_ROWS = 64
"""Fewer rows than this are bound as they are (``one_valued``): a literal saves little
there, and a statement's text would change with almost every small batch."""
_LITERAL_BYTES = 64
"""Longer bytes stay bound: a literal is written into each of a statement's rows (a
checksum is 32 bytes, an empty link none; a hard link's first name could be long)."""
_NOT_ONE = object()


def _one_value(column: Sequence, lookup: Sequence | Mapping | None) -> object:
    """The value every row of ``column`` holds, if it can be a literal: an int (64-bit)
    or short bytes, or any key of ``lookup`` (that gives the literal); else ``_NOT_ONE``.

    Equal is not enough: 1, True and 1.0 compare equal but bind as different values, so
    the values must also be of one type (looked at only once they all compare equal).
    """
    if not isinstance(column, Sequence | array) or len(column) < ONE_VALUE_ROWS:
        return _NOT_ONE
    v = column[0]
    if lookup is None and not (
        (type(v) is bytes and len(v) <= _LITERAL_BYTES)
        or (type(v) is int and _INT64[0] <= v <= _INT64[1])
    ):
        return _NOT_ONE
    if column[-1] != v or column[len(column) // 2] != v or column.count(v) != len(column):
        return _NOT_ONE  # the first two look at two values, not all: most columns vary
    if not isinstance(column, array) and len(set(map(type, column))) != 1:
        return _NOT_ONE  # (an array's values are all ints of its typecode)
    return v


def one_valued(
    table: str,
    fixed: dict[str, str],
    columns: dict[str, Sequence | Iterable],
    lookup: dict[str, Sequence | Mapping] | None = None,
) -> tuple[str, int, Iterator[tuple], tuple]:
    """``insert_rows``' (and ``Catalog._insert``'s) arguments for a batch of rows given
    as columns (name -> values, one per row) whose ``fixed`` columns take one text each.

    A column holding one int or bytes value in every row of the batch joins ``fixed``:
    SQLite then reads it once from the statement instead of binding it per row (a
    backup's files: kind, mode, owner and empty link; a mover's records: volume, header
    size, offset, stored). ``lookup`` (name -> table): the column holds keys, stored as
    their values (a file's kind number -> its name, a volume's name -> its number), so
    a text literal comes from the caller's table, never from the rows. Per batch, not
    per row, so the statements a backup makes stay few (sqlite3 caches them by text);
    an iterator column is bound as it is. The rows come back as tuples of the rest.
    """
    lookup = lookup or {}
    one: dict[str, object] = dict(fixed)
    rest: dict[str, Iterable] = {}
    for name, column in columns.items():
        table_of = lookup.get(name)
        v = _one_value(column, table_of)
        if v is not _NOT_ONE:
            one[name] = v if table_of is None else table_of[v]
        else:
            rest[name] = _looked_up(column, table_of)
    if not rest:  # every column one value: bind them all (insert_rows needs a "?")
        one, rest = dict(fixed), {k: _looked_up(v, lookup.get(k)) for k, v in columns.items()}
    head = f"INSERT INTO {table} ({', '.join([*one, *rest])})"
    return head, len(rest), zip(*rest.values(), strict=True), tuple(one.values())


def _looked_up(column: Iterable, table_of: Sequence | Mapping | None) -> Iterable:
    return column if table_of is None else map(table_of.__getitem__, column)
