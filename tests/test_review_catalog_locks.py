"""The catalog held still for its device copy keeps SQLite's locks (review of session 7).

SQLite's locks on the catalog file are POSIX record locks, which belong to the process:
closing ANY descriptor the process has on that file drops all of them, SQLite's own
included. ``Catalog.frozen_file`` read the file's 100-byte header with ``open()`` in the
controller, so every backup from then on ran without its shared lock on the catalog: a
second process (another backup, ``key add``, prune) that closed its connection could
then take the file's exclusive lock, checkpoint its WAL into the catalog file while the
movers were reading it as "held still" (a torn copy on the devices), and delete the WAL
and shared-memory files under the backup's open connection, so that the next writes of
the two went to different logs and the catalog ended malformed.

Every other process here is a real one (``python -c`` through subprocess): SQLite lets
connections of one process see each other, so only another process shows the fault.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from parbackup.catalog import Catalog

_WRITE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA busy_timeout = 60000")
db.execute("INSERT INTO meta VALUES (?, ?)", (sys.argv[2], "x" * 20000))
db.close()
"""

_DIGEST = "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())"


def _other_writes(path: str, key: str) -> None:
    """Another process commits a row and closes its connection (its last)."""
    subprocess.run([sys.executable, "-c", _WRITE, path, key], check=True, timeout=120)


def _digest_elsewhere(path: str) -> str:
    """The file's digest as another process (a mover) reads it: reading it here would
    itself drop this process's locks."""
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST, path], check=True, timeout=120, capture_output=True
    )
    return out.stdout.decode().strip()


def _new_set(cat: Catalog, char: str) -> None:
    cat.begin_set(char * 32, strategy="balanced", order="size", threshold=0, sources=["/s"])


def test_the_file_holds_still_against_another_process(tmp_path):
    path = str(tmp_path / "cat.sqlite")
    with Catalog(path) as cat:
        _new_set(cat, "a")
        with cat.frozen_file() as frozen:
            assert frozen is not None
            before = _digest_elsewhere(path)
            _other_writes(path, "other")  # its close must not checkpoint into the file
            assert _digest_elsewhere(path) == before
            assert (tmp_path / "cat.sqlite-wal").exists()
        row = cat.db.execute("SELECT count(*) FROM meta WHERE key='other'").fetchone()
        assert row == (1,)


def test_the_catalog_stays_whole_when_others_write_after_the_copy(tmp_path):
    path = str(tmp_path / "cat.sqlite")
    cat = Catalog(path)
    try:
        _new_set(cat, "a")
        with cat.frozen_file() as frozen:
            assert frozen is not None
            _other_writes(path, "k1")
        _new_set(cat, "b")  # the backup writes on after its copy ...
        _other_writes(path, "k2")  # ... while other commands come and go
        _new_set(cat, "c")
        _other_writes(path, "k3")
    finally:
        cat.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        sets = [r[0][0] for r in db.execute("SELECT id FROM sets ORDER BY id")]
        assert sets == ["a", "b", "c"]
        keys = {r[0] for r in db.execute("SELECT key FROM meta")}
        assert {"k1", "k2", "k3"} <= keys
    finally:
        db.close()
