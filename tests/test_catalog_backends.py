"""The catalog contract (catalog/store.py) kept by both backends: SQLite and PostgreSQL.

Every test in the first part runs twice, on a SQLite file and on a database of a real,
throwaway PostgreSQL cluster (tests/pgserver.py), with the same assertions. The second
part covers what only the PostgreSQL catalog has: its schema steps from version 1, its
URL handling, and its error when psycopg is missing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import SRC
from parbackup.catalog import Catalog, open_catalog
from parbackup.catalog.liveness import SetStatus, VolumeUse
from parbackup.catalog.schema import REBUILDING_KEY, SCHEMA_VERSION
from parbackup.entries import Entries
from parbackup.errors import CatalogError
from parbackup.model import DeviceReport, FileEntry, Kind, RecordRef

ODD = os.fsdecode(b"/src/caf\xe9-\xff.bin")  # not UTF-8: must come back byte for byte


# PostgreSQL runs in the whole suite only: starting its server alone took longer than
# the rest of this module, and the quick subset keeps the SQLite half of every test.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def target(request, tmp_path) -> str:
    """Where a new catalog goes: a SQLite path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "cat.sqlite")
    return request.getfixturevalue("pg_url")


def _file(path: str, size: int = 10, kind: Kind = Kind.FILE, link: str = "") -> FileEntry:
    return FileEntry(
        path=path, kind=kind, size=size, mode=0o640, uid=7, gid=8, mtime_ns=1 << 62,
        link=link, ctime_ns=(1 << 62) + 5, ino=(1 << 63) - 1,
    )  # fmt: skip


def _ref(volume: str, position: int, size: int = 10, label: str = "la", **kw) -> RecordRef:
    return RecordRef(label, volume, position, 64, 0, size, bytes([position % 251]) * 32, **kw)


def _begin(cat: Catalog, set_id: str, **kw) -> None:
    cat.begin_set(set_id, strategy="threshold", order="desc", threshold=5, sources=["/src"], **kw)


def _finish(cat: Catalog, set_id: str, status: str = "complete", devices=()) -> None:
    cat.finish_set(set_id, status=status, files=2, nbytes=20, report={"x": 1}, devices=devices)


def test_a_set_round_trips(target):
    files = [(0, _file(ODD)), (1, _file("/src/l", 0, Kind.SYMLINK, link=ODD))]
    with open_catalog(target) as cat:
        _begin(cat, "s1")
        assert [(s.id, s.status) for s in cat.sets()] == [("s1", "running")]
        cat.add_files("s1", files)
        cat.add_records("s1", [(0, _ref("v1", 0)), (0, _ref("v1", 74, origin_set="s0"))])
        cat.mark_files("s1", [1], "incomplete")
        cat.set_file_size("s1", 0, 99)
        devs = [DeviceReport("file:///a", "la", bytes=5), DeviceReport("file:///b", "lb")]
        _finish(cat, "s1", devices=[*devs, DeviceReport("file:///c", "")])
        _finish(cat, "s1", devices=[DeviceReport("file:///a2", "la", status="failed")])
    with open_catalog(target, create=False) as cat:
        (info,) = cat.sets()
        assert (info.status, info.files, info.bytes, info.report) == ("complete", 2, 20, {"x": 1})
        assert info.sources == ["/src"] and cat.resolve_set("latest").id == "s1"
        got = list(cat.files("s1"))
        assert [f.entry.path for f in got] == [ODD, "/src/l"]
        assert got[0].entry == _file(ODD, 99) and got[1].entry.link == ODD
        assert [f.state for f in got] == ["ok", "incomplete"]
        assert list(cat.records("s1")) == [(0, _ref("v1", 0)), (0, _ref("v1", 74, origin_set="s0"))]
        assert [(d["label"], d["url"], d["status"]) for d in cat.set_devices("s1")] == [
            ("la", "file:///a2", "failed"),  # replaced in place: the order stays
            ("lb", "file:///b", "ok"),
        ]


def test_file_attributes_sent_by_a_mover_replace_what_the_set_held(target):
    """``add_file_metas`` (a mover's ``Metas``) on both backends: a file read again after
    its first device failed gets its attributes once, the later ones."""
    with open_catalog(target) as cat:
        _begin(cat, "s1")
        cat.add_files("s1", [(0, _file("/a")), (1, _file("/b")), (2, _file("/c"))])
        cat.add_file_metas("s1", [(0, b"first"), (2, b"c")])
        cat.add_file_metas("s1", [(0, b"again")])
        cat.add_file_metas("s1", [])
        assert [f.entry.meta for f in cat.files("s1")] == [b"again", b"", b"c"]


def test_columnar_entries_and_mover_rows(target):
    entries = Entries()
    for i in range(600):  # more than one batch of rows
        entries.add(_file(f"/src/f{i}", i))
    with open_catalog(target) as cat:
        _begin(cat, "s1")
        cat.add_entries("s1", entries, range(0, 300))
        cat.add_entries("s1", entries, range(300, 600))
        cat.add_record_rows(
            "s1", "la", [(i, "v1", i * 100, 64, 0, i, b"c" * 32) for i in range(600)]
        )
        cat.add_record_rows("s1", "lb", [(5, "v2", 0, 64, 0, 5, b"d" * 32)])
        cat.add_record_rows("s1", "lc", [(7, "v3", 640, 64, 10, 20, b"e" * 32, 15)])  # a mover's
        [(fid, ref)] = [r for r in cat.records("s1") if r[1].label == "lc"]
        got = (ref.volume, ref.position, ref.header_size, ref.offset, ref.size, ref.checksum)
        assert (fid, *got, ref.stored) == (7, "v3", 640, 64, 10, 20, b"e" * 32, 15)
        assert [f.entry.size for f in cat.files("s1")] == list(range(600))
        assert sorted(cat.records_on("s1", "lb")) == [(5, 0, 5)]
        assert cat.drop_records("s1", "la") == 600
        assert cat.drop_records("s1") == 2
        assert list(cat.records("s1")) == []


def test_devices_speeds_and_meta(target):
    with open_catalog(target) as cat:
        assert cat.is_empty()
        cat.remember_device("la", "file:///old", "file")
        cat.remember_device("la", "file:///new", "file")
        cat.record_speed("la", 100.0)
        cat.record_speed("la", 300.0)
        assert cat.device_urls() == {"la": "file:///new"}
        assert cat.device_speeds() == {"la": 200.0}
        cat.set_meta(REBUILDING_KEY, "1")
        cat.set_meta(REBUILDING_KEY, "2")
        assert cat.meta(REBUILDING_KEY) == "2"
        cat.set_meta(REBUILDING_KEY, None)
        assert cat.meta(REBUILDING_KEY) is None and not cat.is_empty()
        for key in ("post-command/1", "post-command/2", "post-commandX", "xpost-command/"):
            cat.set_meta(key, key[-1])
        assert cat.meta_items("post-command/") == {"post-command/1": "1", "post-command/2": "2"}
        cat.clear()
        assert cat.is_empty()


def test_liveness_rows(target):
    """The rows liveness decides over, and the switch of a compaction, on both."""
    with open_catalog(target) as cat:
        _begin(cat, "s1")
        cat.add_records("s1", [(0, _ref("v1", 0)), (1, _ref("v1", 74)), (2, _ref("v1", 148))])
        _finish(cat, "s1")
        _begin(cat, "s2")  # reuses record 0 of s1 (lies in s1's volume)
        cat.add_records("s2", [(0, _ref("v1", 0, origin_set="s1")), (1, _ref("v2", 0))])
        _finish(cat, "s2", devices=[DeviceReport("file:///b", "lb", status="failed")])
        nodes = {n.id: n for n in cat.set_nodes()}
        assert nodes["s2"].failed_labels == frozenset({"lb"})
        assert cat.root_ids() == {"s1", "s2"}
        assert cat.referenced_sets({"s2"}) == {"s1"}
        assert cat.live_use({"s2"}) == {"la": {"v1": VolumeUse(1, 74), "v2": VolumeUse(1, 74)}}
        assert cat.live_use({"s2"}, in_sets={"s1"}) == {"la": {"v1": VolumeUse(1, 74)}}
        assert cat.live_extents({"s1", "s2"}, "la", "v1") == [
            (0, 74, bytes(32)),
            (74, 74, bytes([74]) * 32),
            (148, 74, bytes([148]) * 32),
        ]
        assert cat.mark_forgotten({"s1", "nope"}) == ["s1"]
        assert {n.id: n.status for n in cat.set_nodes()}["s1"] == SetStatus.FORGOTTEN
        assert cat.live_extents({"s2"}, "la", "v1") == [(0, 74, bytes(32))]
        assert cat.move_records("la", "v1", "v1c", {0: 0}) == 1  # s2's reused record
        assert sorted(r.volume for _, r in cat.records("s2")) == ["v1c", "v2"]
        cat.drop_dead_records({"s2"})
        assert list(cat.records("s2")) == []
        cat.forget_set("s1")
        assert [s.id for s in cat.sets()] == ["s2"]


def test_a_forgotten_sets_parity_stripe_goes_with_it(target):
    """``parity:<set>`` meta rows leave with their set (issue 12), on both backends; a
    stripe an older version left behind for a set already gone goes at the next one."""
    with open_catalog(target) as cat:
        for set_id in ("s1", "s2"):
            _begin(cat, set_id)
            _finish(cat, set_id)
            cat.set_parity(set_id, {"k": 2, "m": 1, "set": set_id})
        cat.set_meta("parity:gone", '{"k": 2}')  # its set row was deleted long ago
        assert cat.mark_forgotten({"s1"}) == ["s1"]
        assert cat.parity("s1") == {"k": 2, "m": 1, "set": "s1"}  # prune may still need it
        cat.forget_set("s1")
        assert cat.parity("s1") is None
        assert cat.meta("parity:gone") is None
        assert cat.parity("s2") == {"k": 2, "m": 1, "set": "s2"}
        cat.clear()
        assert cat.parity("s2") is None


def test_the_run_lock_admits_one_run_and_outlives_no_holder(target):
    holder = open_catalog(target)
    _begin(holder, "s1")
    other = open_catalog(target)
    try:
        with pytest.raises(CatalogError, match="is in use by another backup"):
            _begin(other, "s2")
        with pytest.raises(CatalogError, match="is in use by another backup"):
            other.lock_for_run()
    finally:
        holder.close()  # the run 'died' without finishing its set
    other.lock_for_run()  # free now: the set left running becomes interrupted
    assert [(s.id, s.status) for s in other.sets()] == [("s1", "interrupted")]
    _begin(other, "s2")
    _finish(other, "s2")
    assert not other.run_lock.held  # finish_set lets it go
    other.close()


def test_the_copy_on_devices_is_a_sqlite_catalog(target, tmp_path):
    with open_catalog(target) as cat:
        cat.remember_device("la", "file:///a", "file")
        _begin(cat, "s1")
        cat.add_files("s1", [(0, _file(ODD))])
        cat.add_records("s1", [(0, _ref("v1", 0, origin_set="s0", origin_file=3))])
        _finish(cat, "s1", devices=[DeviceReport("file:///a", "la")])
        copy = tmp_path / "copy.sqlite"
        cat.copy_to(str(copy))
        want = (cat.sets(), list(cat.files("s1")), list(cat.records("s1")), cat.set_devices("s1"))
    assert copy.read_bytes().startswith(b"SQLite format 3\0")
    assert not os.path.exists(f"{copy}-wal")  # a self-contained file
    with Catalog(str(copy), create=False) as lite:
        got = (
            lite.sets(),
            list(lite.files("s1")),
            list(lite.records("s1")),
            lite.set_devices("s1"),
        )
        assert got == want
        assert lite.device_urls() == {"la": "file:///a"}


def test_a_missing_catalog_is_not_made_by_readers(target):
    with pytest.raises(CatalogError, match="no catalog at"):
        open_catalog(target, create=False)


# -- PostgreSQL only -------------------------------------------------------------------------


def test_one_schema_step_per_version():
    from parbackup.catalog.pgschema import STEPS

    assert len(STEPS) == SCHEMA_VERSION  # bumping the SQLite schema needs a step here


@pytest.mark.slow
def test_migrations_from_version_1_keep_the_rows(pg_url):
    import psycopg

    from parbackup.catalog.pgschema import current_version, migrate

    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, "test", upto=1) == 0
        assert current_version(conn) == 1
        conn.execute(
            "INSERT INTO sets (id, seq, created, status, strategy, ordering, sources)"
            " VALUES ('old', 1, '2020-01-01', 'complete', 'fill', 'asc', '[\"/src\"]')"
        )
        conn.execute(
            "INSERT INTO files (set_id, file_id, path, kind, size, mode, uid, gid, mtime_ns)"
            " VALUES ('old', 0, '\\x2f61'::bytea, 'file', 3, 420, 0, 0, 5)"
        )
        conn.execute(
            'INSERT INTO records (set_id, file_id, "offset", size, label, volume, position,'
            " header_size, checksum) VALUES ('old', 0, 0, 3, 'la', 'v', 0, 64, '\\x00'::bytea)"
        )
    with open_catalog(pg_url) as cat:  # steps 2.. run on opening
        (info,) = cat.sets()
        assert (info.id, info.status, info.resumed) == ("old", "complete", "")
        (f,) = cat.files("old")
        assert (f.entry.path, f.entry.ctime_ns, f.entry.ino) == ("/a", 0, 0)
        assert list(cat.records("old")) == [(0, RecordRef("la", "v", 0, 64, 0, 3, b"\0"))]
        _begin(cat, "new", resumed="old")
        cat.add_files("new", [(0, _file("/b"))])
        assert cat.sets()[-1].resumed == "old"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(CatalogError, match="newer parbackup"):
        open_catalog(pg_url)


@pytest.mark.slow
def test_the_copy_holds_every_table_of_a_postgres_catalog(pg_url, tmp_path):
    """Every table (a later schema step's too) comes into the SQLite copy, row for row."""
    import psycopg

    with open_catalog(pg_url) as cat:
        cat.remember_device("la", "file:///a", "file")
        _begin(cat, "s1")
        cat.add_files("s1", [(0, replace(_file(ODD), meta=b"xattrs")), (1, _file("/b"))])
        cat.add_records("s1", [(0, _ref("v1", 0)), (1, _ref("v1", 74))])
        cat.add_progress(
            "s1", [(0.5, "file:///a", 10, "bytes", 0), (1.0, "file:///a", 20, "bytes", 0)]
        )
        _finish(cat, "s1", devices=[DeviceReport("file:///a", "la")])
        cat.set_meta(REBUILDING_KEY, "7")
        cat.copy_to(str(tmp_path / "copy.sqlite"))
    with psycopg.connect(pg_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                " current_schema() AND table_name != 'schema_version'"
            )
        ]
        want = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    lite = sqlite3.connect(tmp_path / "copy.sqlite")
    got = {t: lite.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    assert got["meta"] == want["meta"] + 1  # and the copy's own schema version
    assert {t: n for t, n in got.items() if t != "meta"} == {
        t: n for t, n in want.items() if t != "meta"
    }
    assert all(want[t] for t in ("sets", "files", "records", "devices", "set_devices")), want
    with Catalog(str(tmp_path / "copy.sqlite"), create=False) as copy:
        assert [f.entry.meta for f in copy.files("s1")] == [b"xattrs", b""]
        assert copy.progress("s1") == [
            (0.5, "file:///a", 10, "bytes", 0),
            (1.0, "file:///a", 20, "bytes", 0),
        ]


@pytest.mark.slow
def test_the_password_is_never_shown(pg_url, pg_server):
    from pgserver import PASSWORD

    with open_catalog(pg_url) as cat:
        assert PASSWORD not in cat.path and cat.path.startswith("postgresql://postgres@")
    wrong = pg_url.replace(PASSWORD, "wrong-pw")
    with pytest.raises(CatalogError) as err:
        open_catalog(wrong)
    assert "wrong-pw" not in str(err.value) and "\n" not in str(err.value)
    assert "password authentication failed" in str(err.value)


def test_without_psycopg_the_error_says_what_to_install():
    """psycopg made unimportable (a None entry in sys.modules) in a fresh interpreter.

    No server is needed: without psycopg nothing can connect, so the URL names a port
    nothing listens on (9, discard) and carries a password that must not be shown. (It
    named a database of the session's PostgreSQL cluster, which started that cluster in
    the quick subset: about 1 s, and more to stop it at the session's end.)"""
    url = "postgresql://postgres:s3cret-pg@127.0.0.1:9/catalog"
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from parbackup.catalog import open_catalog\n"
        "from parbackup.errors import CatalogError\n"
        f"try:\n    open_catalog({url!r})\nexcept CatalogError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'parbackup[postgres]'" in out.stdout.decode()
    assert "s3cret" not in out.stdout.decode()


def test_sqlite_catalog_files_are_untouched_by_the_postgres_code(tmp_path):
    """A plain path still means a SQLite file (the default backend)."""
    path = tmp_path / "c.sqlite"
    with open_catalog(str(path)) as cat:
        assert type(cat) is Catalog
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == (
        str(SCHEMA_VERSION),
    )


def test_a_sqlite_catalog_never_loads_the_postgresql_backend(tmp_path) -> None:
    """psycopg costs about 0.1 s to import: a command on a SQLite catalog must not pay it."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "parbackup", "sets", "--catalog",
         str(tmp_path / "c.sqlite")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert "parbackup.cli" in proc.stderr  # the import log is there
    assert "psycopg" not in proc.stderr and "parbackup.catalog.postgres" not in proc.stderr
