"""A backup's catalog copy is read from the catalog file itself (Catalog.frozen_file).

Before, every backup first wrote a whole copy of the catalog into scratch room (a
million files: 412 MB onto $TMPDIR's disk) and the movers read that back. Now the file
is held still (every WAL frame checkpointed into it, then a read transaction that keeps
any checkpoint out) while the movers read it, with its header saying "rollback journal"
as the copy's did. These tests check that the file really holds still while another
writer commits and checkpoints, that an older reader makes it give way to the scratch
copy, and that what lands on a device is a whole catalog that opens from read-only
media.
"""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from conftest import run_cli
from parbackup.catalog import Catalog


def _new_set(cat: Catalog, set_id: str) -> None:
    cat.begin_set(set_id, strategy="balanced", order="size", threshold=0, sources=["/src"])


def _open_read_only(path) -> sqlite3.Connection:
    """The copy as read-only media give it: a read-only file in a read-only folder."""
    os.chmod(path, stat.S_IRUSR)
    os.chmod(os.path.dirname(path), stat.S_IRUSR | stat.S_IXUSR)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def test_the_file_holds_still_while_another_writer_commits(tmp_path):
    path = str(tmp_path / "cat.sqlite")
    with Catalog(path) as cat:
        _new_set(cat, "a" * 32)
        with cat.frozen_file() as frozen:
            assert frozen is not None
            where, (at, patch) = frozen
            assert where == os.path.realpath(path)
            with open(where, "rb") as fh:
                before = fh.read()
            with Catalog(path) as other:  # another process's writes go on meanwhile
                other.db.execute("INSERT INTO meta VALUES ('other', 'wrote')")
                assert other.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
            with open(where, "rb") as fh:
                assert fh.read() == before  # no checkpoint wrote into it
        row = cat.db.execute("SELECT value FROM meta WHERE key='other'").fetchone()
        assert row == ("wrote",)
    assert (at, patch) == (18, b"\x01\x01") and before[18:20] == b"\x02\x02"  # WAL -> rollback
    head = before[:18] + patch + before[20:100]
    copy = tmp_path / "media" / "copy.sqlite"
    copy.parent.mkdir()
    copy.write_bytes(head + before[100:])
    db = _open_read_only(str(copy))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("SELECT id FROM sets").fetchall() == [("a" * 32,)]
        assert db.execute("SELECT value FROM meta WHERE key='other'").fetchone() is None
    finally:
        db.close()
        os.chmod(copy.parent, stat.S_IRWXU)


def test_an_older_reader_makes_it_give_way_to_a_scratch_copy(tmp_path):
    path = str(tmp_path / "cat.sqlite")
    with Catalog(path) as cat:
        _new_set(cat, "a" * 32)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sets").fetchone()  # pins this snapshot
            _new_set(cat, "b" * 32)  # frames the reader's snapshot does not have
            with cat.frozen_file() as frozen:
                assert frozen is None
        finally:
            reader.close()
        with cat.frozen_file() as frozen:  # the reader gone, it can be had again
            assert frozen is not None
        _new_set(cat, "c" * 32)  # and the catalog still takes writes after it
        assert len(cat.sets()) == 3


@pytest.mark.slow
def test_a_backups_catalog_copy_is_whole_and_opens_read_only(tmp_path, device_dirs):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_bytes(os.urandom(i * 37))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    for dev in devs:
        copy = dev / "catalog" / "catalog.sqlite"
        assert copy.read_bytes()[18:20] == b"\x01\x01"
        db = _open_read_only(str(copy))
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("SELECT status, files FROM sets").fetchall() == [("complete", 51)]
        finally:
            db.close()
            os.chmod(copy.parent, stat.S_IRWXU)
