"""Schema 5: records hold their volume's number (the ``volumes`` table), read back
through the ``record_places`` view with the rows they had before.

A catalog of schema 4 (tests/oldcatalog.py: one today's code wrote, with the schema-5
step undone) must answer a read-only open without being changed, and the first
writable open migrates it in one transaction; after that it lists, restores and takes
backups as before, on both backends. The migration keeps every row: the view gives
what the old table held, whatever the labels and volume names are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_tree, restored_root, run_cli, snapshot
from oldcatalog import postgres_to_schema_4, sqlite_to_schema_4
from parbackup.catalog import Catalog, open_catalog
from parbackup.catalog import store as catalog_store
from parbackup.model import RecordRef
from parbackup.readback.restore import RestoreOptions, run_restore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def target(request, tmp_path) -> str:
    """Where a new catalog goes: a SQLite path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "cat.sqlite")
    return request.getfixturevalue("pg_url")


def _to_schema_4(target: str) -> None:
    if target.startswith("postgresql:"):
        postgres_to_schema_4(target)
    else:
        sqlite_to_schema_4(target)


def _state(target: str) -> tuple:
    """What the catalog says of its sets and where every record lies."""
    with open_catalog(target, create=False) as cat:
        sets = [(s.id, s.status, s.files, s.bytes) for s in cat.sets()]
        records = {s[0]: sorted(cat.records(s[0]), key=repr) for s in sets}
        rows = {s[0]: sorted(map(tuple, cat.record_rows(s[0]))) for s in sets}
        on = {
            (s[0], d["label"]): sorted(cat.records_on(s[0], d["label"]))
            for s in sets
            for d in cat.set_devices(s[0])
        }
        use = cat.live_use(cat.root_ids())
        labels = cat.labels_in_use(cat.root_ids(), cat.root_ids())
    return sets, records, rows, on, use, labels


def _sets_json(target: str) -> list:
    r = run_cli("sets", "--catalog", target, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


@pytest.mark.slow
def test_a_schema_4_catalog_is_read_then_migrated_and_backed_up_into(
    target, tmp_path, device_dirs, monkeypatch
):
    src = make_tree(tmp_path / "src", seed=5, files=40, big=(1_500_000,))
    devs = device_dirs(2)
    dev_args = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *dev_args, "--catalog", target, "--json")
    assert r.code == 0, r.err
    before, listed = _state(target), _sets_json(target)
    _to_schema_4(target)

    if not target.startswith("postgresql:"):  # read-only media: answered, not changed
        raw = Path(target).read_bytes()
        with monkeypatch.context() as m:
            m.setattr(catalog_store.os, "access", lambda *a, **k: False)
            with Catalog(target, create=False) as cat:
                assert cat.meta("schema") == "4"
                assert _state_of(cat) == before[:3]
                out = tmp_path / "ro-out"
                report = run_restore(cat, RestoreOptions(target=str(out)))
                assert report.status == "ok"
        assert snapshot(restored_root(out, src)) == snapshot(src)
        assert Path(target).read_bytes() == raw

    assert _sets_json(target) == listed  # the first writable open migrated it
    assert _state(target) == before
    with open_catalog(target, create=False) as cat:
        assert cat.meta("schema") is None or cat.meta("schema") == "5"
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", target, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)

    (src / "new-after-migration").write_bytes(os.urandom(70_000))
    r = run_cli("backup", str(src), *dev_args, "--catalog", target, "--json")
    assert r.code == 0 and r.json["status"] == "complete", r.err
    assert run_cli("verify", "--catalog", target).code == 0
    out2 = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out2), "--catalog", target, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.err
    assert snapshot(restored_root(out2, src)) == snapshot(src)
    r = run_cli("restore", "--target", str(tmp_path / "old"), "--catalog", target,
                "--set", listed["sets"][0]["set"], "--json")  # fmt: skip
    assert r.code == 0 and r.json["status"] == "ok", r.err


def _state_of(cat: Catalog) -> tuple:
    sets = [(s.id, s.status, s.files, s.bytes) for s in cat.sets()]
    records = {s[0]: sorted(cat.records(s[0]), key=repr) for s in sets}
    rows = {s[0]: sorted(map(tuple, cat.record_rows(s[0]))) for s in sets}
    return sets, records, rows


_TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=12)
_REFS = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.builds(
            RecordRef,
            label=st.sampled_from(["la", "lb", "it's"]) | _TEXT,
            volume=st.sampled_from(["sets/s/la-0001.pbv", "sets/s/la-0001.c1.pbv"]) | _TEXT,
            position=st.integers(0, 1 << 40),
            header_size=st.integers(60, 400),
            offset=st.integers(0, 1 << 40),
            size=st.integers(0, 1 << 30),
            checksum=st.binary(min_size=32, max_size=32),
            origin_set=st.sampled_from(["", "s0"]),
            origin_file=st.integers(-1, 50),
            stored=st.integers(-1, 1 << 30),
        ),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=_REFS, second=_REFS)
def test_the_view_and_the_migration_give_the_rows_as_stored(tmp_path, monkeypatch, first, second):
    """Any labels and volume names (quotes, SQL, non-ASCII), shared between sets or not:
    the rows read back as added, from a schema-4 file read-only, and after its migration."""
    path = str(tmp_path / f"c{os.getpid()}-{id(first)}.sqlite")
    try:
        with Catalog(path) as cat:
            for set_id, refs in (("s1", first), ("s2", second)):
                cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["/"])
                cat.add_records(set_id, refs)
                cat.finish_set(set_id, status="complete", files=0, nbytes=0, report={}, devices=[])
            want = _state_of(cat)
            assert want[1] == {"s1": sorted(first, key=repr), "s2": sorted(second, key=repr)}
        sqlite_to_schema_4(path)
        with monkeypatch.context() as m:
            m.setattr(catalog_store.os, "access", lambda *a, **k: False)
            with Catalog(path, create=False) as cat:
                assert cat.meta("schema") == "4" and _state_of(cat) == want
        with Catalog(path) as cat:
            assert cat.meta("schema") == "5" and _state_of(cat) == want
            pairs = {(r.label, r.volume) for _f, r in first + second}
            assert cat.db.execute("SELECT COUNT(*) FROM volumes").fetchone() == (len(pairs),)
    finally:
        for suffix in ("", "-wal", "-shm", ".lock", ".readers"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)


def test_moved_and_dropped_records_keep_the_volumes_table_to_what_is_named(tmp_path):
    """Compaction points records at a new volume's number; deleting records drops the
    volumes rows nothing names any more, and only those."""
    with Catalog(str(tmp_path / "c.sqlite")) as cat:
        for set_id in ("s1", "s2"):
            cat.begin_set(set_id, strategy="fill", order="desc", threshold=0, sources=["/"])
        ref = RecordRef("la", "sets/s1/la-0001.pbv", 0, 60, 0, 10, bytes(32))
        cat.add_records(
            "s1", [(0, ref), (1, RecordRef("la", ref.volume, 70, 60, 0, 10, bytes(32)))]
        )
        cat.add_records("s2", [(0, RecordRef("lb", "sets/s2/lb-0001.pbv", 0, 60, 0, 5, bytes(32)))])
        moved = cat.move_records("la", ref.volume, "sets/s1/la-0001.c1.pbv", {70: 0})
        assert moved == 1
        assert sorted((r.volume, r.position) for _f, r in cat.records("s1")) == [
            ("sets/s1/la-0001.c1.pbv", 0),
            ("sets/s1/la-0001.pbv", 0),
        ]
        assert cat.move_records("la", "sets/none.pbv", "x", {0: 0}) == 0

        def names() -> list:
            return [r[0] for r in cat.db.execute("SELECT name FROM volumes ORDER BY num")]

        assert names() == ["sets/s1/la-0001.pbv", "sets/s2/lb-0001.pbv", "sets/s1/la-0001.c1.pbv"]
        cat.drop_dead_records({"s2"})
        assert names() == ["sets/s1/la-0001.pbv", "sets/s1/la-0001.c1.pbv"]
        assert cat.drop_records("s1", "la") == 2  # a failed device's: kept until a prune
        assert len(names()) == 2
        cat.forget_set("s1")
        assert len(names()) == 2
        cat.clear()
        assert names() == []


def test_records_whose_volume_row_is_gone_are_reported_missing(tmp_path, device_dirs):
    """A tampered catalog whose ``volumes`` row was deleted: the records naming it drop
    out of ``record_places``. Restore and verify must call exactly the files that had
    records there damaged (exit 1), not restore what is left and say ok."""
    import sqlite3

    src = make_tree(tmp_path / "src", seed=9, files=30)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))],
                "--catalog", cat, "--json")  # fmt: skip
    assert r.code == 0, r.err
    db = sqlite3.connect(cat)
    with db:
        gone = db.execute("SELECT MIN(num) FROM volumes").fetchone()[0]
        hit = {p.decode() for (p,) in db.execute(
            "SELECT DISTINCT f.path FROM records r JOIN files f USING (set_id, file_id)"
            " WHERE r.vol = ? AND r.size > 0", (gone,))}  # fmt: skip
        files = db.execute("SELECT COUNT(*) FROM files WHERE kind = 'file'").fetchone()[0]
        db.execute("DELETE FROM volumes WHERE num = ?", (gone,))
    db.close()
    assert 0 < len(hit) < files  # the other device's files are still whole
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat, "--json")
    assert r.code == 1 and r.json["status"] == "damaged", r.out
    assert {d["path"] for d in r.json["damaged"]} == hit
    v = run_cli("verify", "--catalog", cat, "--json")
    assert v.code == 1, v.out
