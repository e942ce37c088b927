"""A catalog on a PostgreSQL server, shared by many hosts (REQUIREMENTS C3).

The same operations and guarantees as the SQLite catalog (``store.Catalog``, whose
docstrings are the contract): a set is marked complete in its own transaction after every
surviving device made its data durable, so a run killed at any moment leaves nothing
marked complete that is not. Only the plumbing differs:

- **Connection**: one psycopg 3 connection in autocommit mode; the shared SQL goes
  through ``to_postgres`` (placeholders, ``json_each``, the quoted ``"offset"``), and
  every psycopg error becomes a one-line CatalogError naming the catalog. Every wait
  for the server is bounded (``_Bounded``): a server stopped or hung with the
  connection open (its kernel still acknowledging every byte, so no TCP timeout
  fires) ends the command in one line instead of holding it for ever.
- **Transactions**: ``BEGIN`` plus a transaction-level advisory lock, so writers take
  turns as SQLite's ``BEGIN IMMEDIATE`` makes them (readers never wait).
- **Run lock**: a session-level advisory lock (``AdvisoryRunLock``). The server drops it
  when the holder's connection ends, however the holder died, just as the kernel drops
  the ``flock`` of the SQLite catalog. The readers' lock (``AdvisoryReadLock``) is
  another, taken shared by restore, verify and repair and alone by a prune.
- **Bulk loads**: files and records go in with binary ``COPY`` in the caller's
  transaction. Bareos COPYs into a batch table and merges at job end because it
  deduplicates paths; here rows go in as they are, so COPY straight into the table gives
  the same all-or-nothing batch without the second pass.
- **Reads** of a set's files and records stream through a server-side cursor.
- **Copies on devices** stay SQLite files (``copy_to``), readable without a server.

psycopg is optional (``pip install 'parbackup[postgres]'``); without it, naming a
PostgreSQL catalog is a CatalogError with that hint.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from parbackup.catalog.pgschema import SCHEMA_VERSION, current_version, migrate
from parbackup.catalog.runlock import being_pruned, being_read
from parbackup.catalog.store import Catalog
from parbackup.errors import CatalogError

try:
    import psycopg
    from psycopg.types.numeric import IntLoader
except ImportError:  # the optional extra is not installed: see _connect
    psycopg = None
    IntLoader = None

ANSWER_TIMEOUT = 600.0
"""Seconds the server may take to answer one request (``$PARBACKUP_CATALOG_TIMEOUT``).
Generous: a transaction waits here while another host's run loads its rows."""

RUN_LOCK = 0x7062_6B70_7275_6E00  # "pbkprun": one backup per catalog (session level)
READ_LOCK = 0x7062_6B70_7265_6100  # "pbkprea": shared by readers, alone by a prune
WRITE_LOCK = 0x7062_6B70_7772_6974  # "pbkpwrit": one writing transaction at a time
_TABLES = (  # in foreign-key order, each with the order its rows are copied in
    ("meta", "key"),
    ("sets", "seq"),
    ("devices", "label"),
    ("set_devices", "rowid"),
    ("volumes", "num"),
    ("files", "set_id, file_id"),
    ("records", "set_id, file_id"),  # the order of its index: the copy fills it fastest
    ("file_meta", "set_id, file_id"),
    ("progress", "set_id, seq"),
)
_cursor_names = itertools.count()


def display_url(url: str) -> str:
    """The URL without its password (for messages and reports)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """The shared SQL in PostgreSQL's dialect: ``%s`` placeholders, ``json_each`` as
    ``json_array_elements_text``, the quoted ``"offset"`` column, 64-bit integers."""
    sql = sql.replace("json_each(?)", "json_array_elements_text(?::json)")
    sql = sql.replace("temp.moves", "pg_temp.moves")
    sql = re.sub(r'(?<!")\boffset\b(?!")', '"offset"', sql)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    return sql.replace("%", "%%").replace("?", "%s")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Connection:
    """A psycopg connection speaking the shared SQL, with errors mapped at the boundary."""

    def __init__(self, conn: Any, where: str) -> None:
        self.conn = conn
        self.where = where

    def execute(self, sql: str, params: Sequence = ()) -> Any:
        try:
            return self.conn.execute(to_postgres(sql), tuple(params) or None)
        except psycopg.Error as exc:
            raise CatalogError(f"catalog {self.where}: {_one_line(exc)}") from exc

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.executemany(to_postgres(sql), rows)
        except psycopg.Error as exc:
            raise CatalogError(f"catalog {self.where}: {_one_line(exc)}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class _Transaction:
    """``BEGIN`` … ``COMMIT`` (``ROLLBACK`` on an error), writers one at a time."""

    def __init__(self, db: _Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")
        self.db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            with contextlib.suppress(CatalogError):  # a lost connection rolled back already
                self.db.execute("ROLLBACK")


class AdvisoryRunLock:
    """The run lock of a PostgreSQL catalog: ``RUN_LOCK`` held by this session.

    The same contract as ``runlock.RunLock``: ``acquire`` fails at once with a message
    naming the holder (its application name says which host and pid), True when newly
    taken; ``release`` never raises.
    """

    def __init__(self, db: _Connection) -> None:
        self.db = db
        self.held = False

    def acquire(self) -> bool:
        if self.held:
            return False
        (ok,) = self.db.execute("SELECT pg_try_advisory_lock(?)", (RUN_LOCK,)).fetchone()
        if not ok:
            row = self.db.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.classid::bigint = ? AND l.objid::bigint = ? AND l.objsubid = 1",
                (RUN_LOCK >> 32, RUN_LOCK & 0xFFFF_FFFF),
            ).fetchone()
            holder = (row[0] if row else "") or "unknown"
            raise CatalogError(
                f"the catalog {self.db.where} is in use by another backup ({holder}); "
                "wait for it to finish, or use another --catalog"
            )
        self.held = True
        return True

    def lost(self) -> str:
        """Always "": a session's lock has no file that could be deleted (RunLock.lost)."""
        return ""

    def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(CatalogError):
                self.db.execute("SELECT pg_advisory_unlock(?)", (RUN_LOCK,))


class AdvisoryReadLock:
    """The readers' lock of a PostgreSQL catalog (``READ_LOCK``), with ``ReadLock``'s
    contract (runlock.py): shared by restore, verify and repair, alone by a prune."""

    def __init__(self, db: _Connection) -> None:
        self.db = db
        self.unlock = ""  # the call that drops it, as it is held; "" when not held

    def _take(self, how: str, refused: Callable[[str], str]) -> None:
        if self.unlock:
            return
        (ok,) = self.db.execute(f"SELECT pg_try_advisory_lock{how}(?)", (READ_LOCK,)).fetchone()
        if not ok:
            raise CatalogError(refused(self.db.where))
        self.unlock = f"pg_advisory_unlock{how}"

    def share(self) -> None:
        self._take("_shared", being_pruned)

    def exclusive(self) -> None:
        self._take("", being_read)

    def release(self) -> None:
        unlock, self.unlock = self.unlock, ""
        if unlock:
            with contextlib.suppress(CatalogError):
                self.db.execute(f"SELECT {unlock}(?)", (READ_LOCK,))


if psycopg is not None:

    class _Bounded(psycopg.Connection):
        """A connection whose every wait for the server ends after ``limit`` seconds;
        it is then closed (its state unknown), so later calls, the run lock's release
        among them, fail at once instead of waiting again."""

        limit = ANSWER_TIMEOUT

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            try:
                return super().wait(gen, interval, self.limit if timeout is None else timeout)
            except psycopg.errors._WaitTimeout:
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the server gave no answer within {self.limit:g} seconds"
                    " (stopped or hung?); set PARBACKUP_CATALOG_TIMEOUT to wait longer"
                ) from None


def answer_timeout() -> float:
    """``$PARBACKUP_CATALOG_TIMEOUT`` seconds, else ``ANSWER_TIMEOUT``."""
    text = os.environ.get("PARBACKUP_CATALOG_TIMEOUT", "")
    try:
        value = float(text) if text else ANSWER_TIMEOUT
    except ValueError:
        raise CatalogError(f"PARBACKUP_CATALOG_TIMEOUT={text!r} is not a number") from None
    if not value > 0:
        raise CatalogError(f"PARBACKUP_CATALOG_TIMEOUT={text!r} is not above 0")
    return value


def _connect(url: str, where: str) -> Any:
    if psycopg is None:
        raise CatalogError(
            f"the catalog {where} is on PostgreSQL, which needs psycopg: "
            "pip install 'parbackup[postgres]'"
        )
    limit = answer_timeout()
    try:
        conn = _Bounded.connect(
            url,
            autocommit=True,
            connect_timeout=30,
            application_name=f"parbackup pid {os.getpid()} on {socket.gethostname()}",
        )
    except psycopg.Error as exc:
        raise CatalogError(f"cannot open catalog {where}: {_one_line(exc)}") from exc
    conn.limit = limit
    conn.adapters.register_loader("numeric", IntLoader)  # SUM(bigint): integral numeric
    return conn


class PostgresCatalog(Catalog):
    """A connection to a catalog on a PostgreSQL server (``postgresql://…``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.path = display_url(url)
        conn = _connect(url, self.path)
        self.db = _Connection(conn, self.path)
        self.run_lock = AdvisoryRunLock(self.db)
        self.read_lock = AdvisoryReadLock(self.db)
        self._types: dict[str, dict[str, str]] = {}
        try:
            version = current_version(conn)
            if version is None and not create:
                raise CatalogError(f"no catalog at {self.path} (run a backup first)")
            if version is None or version < SCHEMA_VERSION:
                migrate(conn, self.path)
            elif version > SCHEMA_VERSION:
                raise CatalogError(f"{self.path} was written by a newer parbackup ({version})")
        except psycopg.Error as exc:
            self.db.close()
            raise CatalogError(f"cannot open catalog {self.path}: {_one_line(exc)}") from exc
        except CatalogError:
            self.db.close()
            raise

    def transaction(self) -> _Transaction:
        """``with catalog.transaction():`` runs the block in one transaction."""
        return _Transaction(self.db)

    def close(self) -> None:
        """Close the connection (the server drops the run and read locks with it)."""
        self.run_lock.release()
        self.read_lock.release()
        self.db.close()

    def _insert(
        self,
        head: str,
        ncols: int,
        rows: Iterable[tuple],
        fixed: tuple = (),
    ) -> None:
        """COPY the rows into the table ``head`` names (binary format, one round trip
        per buffer), inside the caller's transaction; ``fixed`` as in store.py (here
        put in front of each row: COPY takes no literals)."""
        if fixed:
            rows = map(fixed.__add__, rows)
        match = re.fullmatch(r"INSERT INTO (\w+) \(([^)]*)\)", head)
        if match is None:
            raise CatalogError(f"cannot bulk-load {head!r}")
        columns = [c.strip() for c in match[2].split(",")]
        names = ", ".join(f'"{c}"' for c in columns)
        types = self._column_types(match[1])  # before the COPY: it holds the connection
        try:
            with (
                self.db.conn.cursor() as cur,
                cur.copy(f"COPY {match[1]} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types([types[c] for c in columns])
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise CatalogError(f"catalog {self.path}: {_one_line(exc)}") from exc

    def _column_types(self, table: str) -> dict[str, str]:
        """Column -> its type's name, as binary COPY needs them (asked once per table)."""
        types = self._types.get(table)
        if types is None:
            rows = self.db.execute(
                "SELECT column_name, udt_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            ).fetchall()
            types = self._types[table] = dict(rows)
        return types

    def _rows(self, sql: str, params: Sequence) -> Iterator[Sequence]:
        """The rows of a query through a server-side cursor, a few thousand at a time;
        the connection stays free for other statements meanwhile."""
        try:
            name = f"pb{next(_cursor_names)}"
            with self.db.conn.cursor(name=name, withhold=True, binary=True) as cur:
                cur.execute(to_postgres(sql), tuple(params) or None)
                while batch := cur.fetchmany(20000):
                    yield from batch
        except psycopg.Error as exc:
            raise CatalogError(f"catalog {self.path}: {_one_line(exc)}") from exc

    def copy_to(self, path: str) -> None:
        """Write the whole catalog as a new SQLite file at ``path`` (the copy on devices
        is SQLite whatever the catalog is, so it is readable without a server), read in
        one snapshot: a consistent copy, as SQLite's backup API gives."""
        self.db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            with Catalog(path) as copy:
                copy.load_copy(self._dump())
        finally:
            with contextlib.suppress(CatalogError):
                self.db.execute("COMMIT")

    @contextlib.contextmanager
    def frozen_file(self) -> Iterator[tuple[str, tuple[int, bytes]] | None]:
        """No file of its own to put on devices: ``copy_to`` makes one."""
        yield None

    def _dump(self) -> Iterator[tuple[str, list[str], Iterator[Sequence]]]:
        """(table, columns, rows) of every table of the catalog (those in _TABLES first,
        in that order; any other a later schema step added after them), streamed."""
        known = dict(_TABLES)
        present = {
            r[0]
            for r in self.db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                " current_schema() AND table_type = 'BASE TABLE' AND table_name != ?",
                ("schema_version",),
            )
        }
        tables = [t for t in known if t in present] + sorted(present - set(known))
        shapes = []
        for table in tables:
            rows = self.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE"
                " table_schema = current_schema() AND table_name = ? AND column_name"
                " != 'rowid' ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            shapes.append((table, [r[0] for r in rows]))
        for table, columns in shapes:
            names = ", ".join(f'"{c}"' for c in columns)
            order = f" ORDER BY {known[table]}" if table in known else ""
            yield table, columns, self._rows(f"SELECT {names} FROM {table}{order}", ())
