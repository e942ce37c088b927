"""Catalogs as parbackup wrote them before schema 5 (records holding their device label
and volume name as text, no ``volumes`` table), made from one today's code wrote: the
schema-5 step undone, row for row. On SQLite the records table is rewritten with the
DDL of schema 4 (catalog/schema.py at 2b01250); on PostgreSQL step 5 is undone.
"""

from __future__ import annotations

import sqlite3

V4_RECORDS = """CREATE TABLE records (
    set_id TEXT NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    file_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    label TEXT NOT NULL,
    volume TEXT NOT NULL,
    position INTEGER NOT NULL,
    header_size INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    origin_set TEXT NOT NULL DEFAULT '',
    origin_file INTEGER NOT NULL DEFAULT -1,
    stored INTEGER NOT NULL DEFAULT -1
)"""
COLUMNS = (
    "set_id, file_id, offset, size, label, volume, position, header_size, checksum,"
    " origin_set, origin_file, stored"
)


def sqlite_to_schema_4(path: str) -> None:
    """Turn the SQLite catalog at ``path`` (schema 5) into the schema-4 catalog with
    the same rows, in their order."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"CREATE TABLE records_4 AS SELECT {COLUMNS} FROM record_places")
        db.execute("DROP VIEW record_places")
        db.execute("DROP TABLE records")
        db.execute("DROP TABLE volumes")
        db.execute(V4_RECORDS)
        db.execute(f"INSERT INTO records SELECT {COLUMNS} FROM records_4 ORDER BY rowid")
        db.execute("DROP TABLE records_4")
        db.execute("CREATE INDEX records_by_set ON records(set_id)")
        db.execute(
            "CREATE INDEX records_by_origin ON records(origin_set, set_id) WHERE origin_set != ''"
        )
        db.execute("UPDATE meta SET value='4' WHERE key='schema'")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def postgres_to_schema_4(url: str) -> None:
    """Undo schema step 5 on the PostgreSQL catalog at ``url``, rows kept."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE records ADD COLUMN label TEXT, ADD COLUMN volume TEXT")
        conn.execute(
            "UPDATE records r SET label = v.label, volume = v.name FROM volumes v"
            " WHERE v.num = r.vol"
        )
        conn.execute("DROP VIEW record_places")
        conn.execute("ALTER TABLE records DROP COLUMN vol")
        conn.execute("ALTER TABLE records ALTER COLUMN label SET NOT NULL")
        conn.execute("ALTER TABLE records ALTER COLUMN volume SET NOT NULL")
        conn.execute("DROP TABLE volumes")
        conn.execute("DELETE FROM schema_version WHERE version = 5")
