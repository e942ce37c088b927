"""The catalog: backup sets, their files, and where every record of every file lies.

SQLite in WAL mode with ``synchronous=FULL``: a set is marked complete in its own
transaction, after every surviving device has made its data durable, so a crash at any
moment leaves either a complete set or one that is not marked complete. Writers wait for
each other (``busy_timeout``) instead of failing, so two runs may share a catalog.

This is the only module that imports sqlite3.

``Catalog`` is also the contract every catalog backend keeps: its docstrings say what
each operation guarantees, and its SQL (here and in liverows.py) is written in the
dialect SQLite and PostgreSQL share. ``postgres.PostgresCatalog`` runs the same
operations on a shared server, replacing only the plumbing: the connection, transactions,
the run lock, bulk loads (COPY), streaming reads and the copy written to devices (always a
SQLite file). ``catalog.open_catalog`` picks the backend from what the user named.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from platformdirs import user_data_dir

from parbackup.catalog.filerows import FileRows
from parbackup.catalog.liverows import LivenessRows
from parbackup.catalog.recordrows import RecordRows
from parbackup.catalog.runlock import ReadLock, ReadLocking, RunLock, refuse_other_names
from parbackup.catalog.schema import (
    ADDED_COLUMNS,
    MIGRATE_5,
    ORIGIN_INDEX,
    PLACES_V4,
    PLACES_VIEW,
    SCHEMA,
    SCHEMA_VERSION,
    Transaction,
    insert_rows,
)
from parbackup.catalog.setref import pick_set
from parbackup.catalog.siderows import SideRows
from parbackup.errors import CatalogError
from parbackup.model import DeviceReport


@dataclass(frozen=True)
class SetInfo:
    """One backup set as the catalog knows it."""

    id: str
    created: str
    finished: str | None
    status: str
    kind: str
    strategy: str
    order: str
    threshold: int
    files: int
    bytes: int
    reused: int
    sources: list[str]
    report: dict | None
    resumed: str = ""
    """The interrupted set this set's run resumed (reused records of), or ''."""


def _wal_is_empty(path: str) -> bool:
    """True when the catalog's write-ahead log holds nothing (absent or empty): the main
    file alone is then the whole catalog, so reading it immutably misses nothing."""
    try:
        return os.path.getsize(path + "-wal") == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _create(path: str) -> None:
    """Make a new, empty catalog at ``path`` whole, never a 0-byte file: it is made
    under a temporary name (switched to WAL mode, which writes SQLite's header) and
    linked into place, so a catalog file that is empty was cut, not made (the check in
    ``Catalog``). Another process that made it first wins; its file is left alone."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.new-{os.getpid()}"
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links here (a FAT stick): one new catalog replaces
            if not os.path.exists(path):  # another made at the same instant, at worst
                os.rename(tmp, path)
    finally:
        for name in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Catalog(LivenessRows, RecordRows, SideRows, FileRows):
    """A connection to one catalog file. Use from one thread (the engine's main thread)."""

    began: tuple[str, ...] = ()
    """The sets this connection began (``begin_set``): what an interrupted run reports."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        # One name per catalog file: symlinks and relative paths resolved, so the run
        # lock (and every path reported or stored) is the same however it was named.
        path = os.path.realpath(path)
        self.path = path
        self.run_lock = RunLock(path)
        self.read_lock: ReadLocking = ReadLock(path)
        """Held shared by restore, verify and repair, alone by a prune (runlock.py)."""
        if not create and not os.path.exists(path):
            raise CatalogError(f"no catalog at {path} (run a backup first, or pass --catalog)")
        if os.path.exists(path) and not os.path.isfile(path):
            # a FIFO would block SQLite's open for ever, deaf to SIGTERM (it retries the
            # open through signals)
            raise CatalogError(f"catalog {path} is not a regular file")
        if os.path.isfile(path) and os.path.getsize(path) == 0 and _wal_is_empty(path):
            # never one parbackup made (_create): a catalog cut to nothing (a file system
            # that lost it in a crash, a failed copy) must not read as "no sets", nor
            # start a new history on top of the devices' old one
            raise CatalogError(
                f"catalog {path} is an empty file (0 bytes), not a catalog: if it held"
                " backup sets, remove it and rebuild it from the devices"
                " (parbackup rebuild-catalog); if not, remove it"
            )
        folder = os.path.dirname(path)
        if not create and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
            self._open_read_only(path)  # read-only media: a catalog copy on a disc
            return
        refuse_other_names(path)
        try:
            if create and not os.path.exists(path):
                _create(path)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 60000")
            self._use_wal()
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA foreign_keys = ON")
            with self.transaction():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise CatalogError(f"{path} was written by a newer parbackup (schema {row[0]})")
                elif int(row[0]) < SCHEMA_VERSION:
                    self._migrate()
                self.db.execute(ORIGIN_INDEX)
                self.db.execute(PLACES_VIEW)
        except (sqlite3.DatabaseError, OSError, UnicodeDecodeError) as exc:
            if not create and _wal_is_empty(path):
                # only reading: a disk too full for SQLite's shared-memory file (or any
                # other refusal to write) must not stop sets, files, verify or restore
                with contextlib.suppress(Exception):
                    self.db.close()
                with contextlib.suppress(CatalogError):
                    self._open_read_only(path)
                    return
            raise CatalogError(f"cannot open catalog {path}: {_reason(exc)}") from exc

    # -- plumbing ------------------------------------------------------------------------
    def _open_read_only(self, path: str) -> None:
        """Open a catalog nobody may write here (read-only media, no write permission):
        SQLite's immutable mode takes no lock and writes no journal or shared memory, so
        ``sets``, ``files``, ``restore`` and ``verify`` work from it. Writing fails."""
        try:
            uri = "file:" + quote(path) + "?mode=ro&immutable=1"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise CatalogError(f"cannot open catalog {path} read-only: {_reason(exc)}") from exc
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise CatalogError(f"{path} was written by a newer parbackup (schema {version})")
        if version == 4:  # the records hold their label and volume: a view of them as
            try:  # schema 5's reads name them (in memory: nothing written to the file)
                self.db.execute(PLACES_V4)
            except sqlite3.DatabaseError as exc:
                raise CatalogError(f"cannot read catalog {path}: {_reason(exc)}") from exc
        elif version < SCHEMA_VERSION:  # an older copy on a disc: brought up to date in memory
            try:
                memory = sqlite3.connect(":memory:", isolation_level=None)
                self.db.backup(memory)
                self.db.close()
                self.db = memory
                with self.transaction():
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self._migrate()
                    self.db.execute(PLACES_VIEW)
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                raise CatalogError(f"cannot read catalog {path}: {_reason(exc)}") from exc

    def _use_wal(self, wait: float = 60.0) -> None:
        """Switch a new catalog to WAL mode.

        The switch needs the database to itself and SQLite does not wait for it (the busy
        timeout does not apply), so two processes opening a brand-new catalog at once
        would see "database is locked": retry until the other has finished its opening.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                (mode,) = self.db.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Bring an older catalog up to SCHEMA_VERSION (inside the opening transaction)."""
        for table, column, decl in ADDED_COLUMNS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        if "label" in {r[1] for r in self.db.execute("PRAGMA table_info(records)")}:
            for statement in MIGRATE_5:  # schema 5: volumes by number
                self.db.execute(statement)
        self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def transaction(self) -> Transaction:
        """``with catalog.transaction():`` runs the block in one IMMEDIATE transaction."""
        return Transaction(self.db)

    def _insert(
        self,
        head: str,
        ncols: int,
        rows: Iterable[tuple],
        fixed: tuple = (),
    ) -> None:
        """Bulk rows (``head`` is ``INSERT INTO table (columns)``), inside a transaction;
        the PostgreSQL catalog loads them with COPY instead. ``fixed``: the values the
        first columns take in every row (the rows hold the other ``ncols`` values; see
        schema.py's ``one_valued``)."""
        insert_rows(self.db, head, ncols, rows, fixed)

    def _rows(self, sql: str, params: Sequence) -> Iterable[Sequence]:
        """The rows of a query, streamed (a million files are never held in memory)."""
        return self.db.execute(sql, params)

    def load_copy(self, tables: Iterable[tuple[str, Sequence[str], Iterable[tuple]]]) -> None:
        """Fill this new catalog with another catalog's rows, (table, columns, rows) per
        table, in one transaction: how a PostgreSQL catalog writes its SQLite copy. No
        journal while it fills: a copy is written to a temporary file, and one that is
        not whole is thrown away, never read."""
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        with self.transaction():
            for table, columns, rows in tables:
                head = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"
                insert_rows(self.db, head, len(columns), rows)
        self.db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file

    def close(self) -> None:
        """Close the connection (and drop the run and read locks, if held)."""
        self.db.close()
        self.run_lock.release()
        self.read_lock.release()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing a set -------------------------------------------------------------------
    def begin_set(
        self,
        set_id: str,
        *,
        strategy: str,
        order: str,
        threshold: int,
        sources: Sequence[str],
        kind: str = "full",
        parent: str | None = None,
        created: str | None = None,
        resumed: str = "",
    ) -> None:
        """Record a new set as 'running'; it only becomes complete with finish_set.

        Takes the catalog's run lock (runlock.py) until finish_set or close, so two
        backups never write one catalog at once; sets left 'running' by a run that died
        become 'interrupted' (``lock_for_run``). ``resumed`` names the interrupted
        set whose records this run reuses (it stays alive while this run runs).
        """
        self.lock_for_run()
        self.began = (*self.began, set_id)
        with self.transaction():
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sets").fetchone()[0]
            self.db.execute(
                "INSERT INTO sets (id, seq, created, status, kind, parent, strategy, ordering,"
                " threshold, sources, resumed) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    set_id,
                    seq,
                    created or _now(),
                    kind,
                    parent,
                    strategy,
                    order,
                    threshold,
                    json.dumps(list(sources)),
                    resumed,
                ),
            )

    def finish_set(
        self,
        set_id: str,
        *,
        status: str,
        files: int,
        nbytes: int,
        report: dict,
        devices: Sequence[DeviceReport],
        reused: int = 0,
    ) -> None:
        """Close a set with its final status and per-device outcome, in one transaction.

        Devices without a label (never opened) are left out of ``set_devices``.
        """
        with self.transaction():
            self.db.executemany(
                "INSERT INTO set_devices (set_id, label, url, status, error, bytes, segments,"
                " seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (set_id, label) DO UPDATE"
                " SET url=excluded.url, status=excluded.status, error=excluded.error,"
                " bytes=excluded.bytes, segments=excluded.segments, seconds=excluded.seconds",
                (
                    (set_id, d.label, d.url, d.status, d.error, d.bytes, d.segments, d.seconds)
                    for d in devices
                    if d.label
                ),
            )
            self.db.execute(
                "UPDATE sets SET status=?, finished=?, files=?, bytes=?, reused=?, report=?"
                " WHERE id=?",
                (status, _now(), files, nbytes, reused, json.dumps(report), set_id),
            )
        self.run_lock.release()

    def lock_for_run(self) -> int:
        """Take the run lock; when newly taken, mark sets of dead runs 'interrupted'.
        How many it marked."""
        if not self.run_lock.acquire():
            return 0
        with self.transaction():  # nobody else holds it: a 'running' set's run died
            sql = "SELECT COUNT(*) FROM sets WHERE status='running'"
            (running,) = self.db.execute(sql).fetchone()
            self.db.execute(
                "UPDATE sets SET status='interrupted', finished=? WHERE status='running'",
                (_now(),),
            )
        return int(running)

    # -- reading -------------------------------------------------------------------------
    def sets(self) -> list[SetInfo]:
        """Every set, oldest first."""
        rows = self.db.execute(
            "SELECT id, created, finished, status, kind, strategy, ordering, threshold, files,"
            " bytes, reused, sources, report, resumed FROM sets ORDER BY seq"
        ).fetchall()
        return [
            SetInfo(*r[:11], json.loads(r[11]), json.loads(r[12]) if r[12] else None, r[13])
            for r in rows
        ]

    def resolve_set(self, ref: str | None, sources: Sequence[str] | None = None) -> SetInfo:
        """A set by reference: 'latest', 'latest~N', an id or id prefix, or a time
        (catalog/setref.py says how), among the sets of ``sources`` if given."""
        return pick_set(self.sets(), ref, self.path, sources)

    def set_devices(self, set_id: str) -> list[dict]:
        """Per-device outcome of a set."""
        rows = self.db.execute(
            "SELECT label, url, status, error, bytes, segments, seconds FROM set_devices"
            " WHERE set_id=? ORDER BY rowid",
            (set_id,),
        ).fetchall()
        keys = ("label", "url", "status", "error", "bytes", "segments", "seconds")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def copy_to(self, path: str) -> None:
        """Write a consistent copy of the whole catalog to ``path`` (SQLite backup API).

        ``path`` is a temporary file, put on the devices and then deleted: it is written
        without a journal or fsync (a copy that is not whole is never read), which spared
        the end of every backup the flush of the whole catalog to the local disk."""
        target = sqlite3.connect(path)
        try:
            target.execute("PRAGMA journal_mode = OFF")
            target.execute("PRAGMA synchronous = OFF")
            self.db.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()

    @contextlib.contextmanager
    def frozen_file(self) -> Iterator[tuple[str, tuple[int, bytes]] | None]:
        """The catalog file itself, whole and unchanging while the ``with`` lasts: (its
        path, (offset, bytes) a copy must hold there instead of the file's), or None when
        that cannot be had now (then ``copy_to``).

        A backup's copy for its devices is read from here instead of through
        ``copy_to``'s scratch file (a million files: 412 MB less to write and read back).
        With the write lock held for a moment, a checkpoint moves every WAL frame into
        the file and a read transaction begins on another connection: SQLite then reads
        that snapshot from the file alone and lets no checkpoint write into the file
        until the transaction ends, while other writers go on into the WAL. The header's
        bytes 18-19 become 1 (a rollback-journal file, as ``copy_to``'s; SQLite's own
        switch out of WAL rewrites just those): a copy on read-only media must not ask
        for a WAL. This process never opens the file itself: closing any descriptor of
        it would drop every POSIX lock SQLite holds on it here (its shared lock kept
        another process's last close from checkpointing into the file and deleting the
        WAL under this one's connection); the movers read it in their own processes."""
        try:
            reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error:
            yield None
            return
        try:
            yield self._settle(reader)
        finally:
            reader.close()

    def _settle(self, reader: sqlite3.Connection) -> tuple[str, tuple[int, bytes]] | None:
        """Begin ``frozen_file``'s read transaction on ``reader`` once every WAL frame
        is in the file; (path, patch), or None if a reader of an older state keeps frames
        in the WAL, the catalog is not in WAL mode, or anything fails."""
        try:
            self.db.execute("BEGIN IMMEDIATE")  # no commit between the checkpoint and
            try:  # the reader's snapshot
                busy, frames, moved = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or frames < 0 or frames != moved:
                    return None
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM meta").fetchone()
            finally:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            return None
        return self.path, (18, b"\x01\x01")  # header: write and read versions 1


def default_catalog_path() -> str:
    """``$PARBACKUP_CATALOG``, else ``catalog.sqlite`` in the user's data directory."""
    env = os.environ.get("PARBACKUP_CATALOG")
    if env:
        return env
    return os.path.join(user_data_dir("parbackup", appauthor=False), "catalog.sqlite")


def _reason(exc: BaseException) -> str:
    """Why SQLite refused a catalog. A damaged schema is reported with the bytes SQLite
    could not parse (``near "...": syntax error``); where they are not UTF-8, Python's
    sqlite3 fails to decode the message itself (UnicodeDecodeError): it is shown as it
    decodes, the bad bytes replaced."""
    if isinstance(exc, UnicodeDecodeError) and isinstance(exc.object, bytes):
        return exc.object.decode("utf-8", "replace")
    return str(exc)
