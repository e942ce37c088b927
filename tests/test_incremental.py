"""Incremental backups (F3): a chain full -> incremental -> incremental on real devices.

Each set must restore exactly to its tree as it stood then, copy only the changed bytes
(measured as the growth of the devices' volumes), and be verifiable.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from oldcatalog import sqlite_to_schema_4
from parbackup.catalog import Catalog
from parbackup.catalog.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


def volume_bytes(devs: list[Path]) -> int:
    """Bytes held in the volumes of every set on the devices."""
    return sum(p.stat().st_size for d in devs for p in (d / "sets").rglob("*.pbv"))


def backup(tree: Path, devs: list[Path], cat: str, *extra: str):
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json", *extra)
    assert r.code == 0, r.err + r.out
    return r.json


def restore_and_compare(tmp: Path, tree: Path, cat: str, set_id: str, expected: dict) -> None:
    out = tmp / f"out-{set_id[:8]}"
    r = run_cli("restore", "--target", str(out), "--set", set_id, "--catalog", cat)
    assert r.code == 0, r.err + r.out
    assert snapshot(restored_root(out, tree)) == expected
    r = run_cli("verify", "--set", set_id, "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out


@pytest.mark.slow
def test_incremental_chain(tmp_path, device_dirs):
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    tree = make_tree(tmp_path / "src", seed=7, files=30, big=(3_000_000,))
    total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())

    s1 = backup(tree, devs, cat, "--incremental")  # no parent yet: a full backup
    assert s1["kind"] == "full" and s1["bytes"] == total and s1["reused"] == 0
    state1 = snapshot(tree)
    grown0 = volume_bytes(devs)

    # modify (new size), modify in place keeping size and mtime, add, delete
    files = sorted(p for p in tree.rglob("file*.bin") if p.stat().st_size > 1000)
    a, b, c = files[0], files[1], files[2]
    a.write_bytes(os.urandom(5000))
    st = b.stat()
    with open(b, "r+b") as fh:
        fh.write(b"X" * 100)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
    (tree / "new.bin").write_bytes(os.urandom(70_000))
    c.unlink()
    changed = 5000 + b.stat().st_size + 70_000

    s2 = backup(tree, devs, cat, "--incremental")
    state2 = snapshot(tree)
    grown = volume_bytes(devs) - grown0
    assert s2["kind"] == "incremental"
    assert s2["bytes"] == changed
    new_total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    assert s2["reused"] == new_total - changed
    assert changed <= grown <= changed + 64 * 1024  # headers of ~50 records, no re-copy
    assert s2["threshold"] == -(-changed // 3)

    # second incremental: only the big file changes
    big = tree / "big0.bin"
    with open(big, "r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"changed!")
    grown0 = volume_bytes(devs)
    s3 = backup(tree, devs, cat, "--incremental")
    state3 = snapshot(tree)
    assert s3["bytes"] == big.stat().st_size
    assert s3["reused"] == new_total - big.stat().st_size
    assert big.stat().st_size <= volume_bytes(devs) - grown0 <= big.stat().st_size + 64 * 1024

    # the dry run agrees: only the changed bytes are planned
    r = run_cli("plan", str(tree), *[a for d in devs for a in ("-d", str(d))], "--json",
                "--incremental", "--catalog", cat)  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["threshold"] == 0 and sum(d["bytes"] for d in r.json["devices"]) == 0

    # nothing changed: nothing copied
    s4 = backup(tree, devs, cat, "--incremental")
    assert s4["bytes"] == 0 and s4["reused"] == new_total

    for s, state in ((s1, state1), (s2, state2), (s3, state3), (s4, state3)):
        restore_and_compare(tmp_path, tree, cat, s["set"], state)

    r = run_cli("sets", "--catalog", cat, "--json")
    kinds = [(x["kind"], x["bytes"], x["reused"]) for x in r.json["sets"]]
    assert kinds == [
        ("full", total, 0),
        ("incremental", changed, new_total - changed),
        ("incremental", big.stat().st_size, new_total - big.stat().st_size),
        ("incremental", 0, new_total),
    ]
    r = run_cli("sets", "--catalog", cat, env={"COLUMNS": "250"})
    assert "incremental" in r.out and "reused" in r.out


def test_rehash_compares_content(tmp_path, device_dirs):
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    tree = make_tree(tmp_path / "src", seed=3, files=10)
    total = sum(p.stat().st_size for p in tree.rglob("*.bin"))
    backup(tree, devs, cat)
    for p in tree.rglob("*.bin"):
        os.utime(p)  # new mtime, same content
    victim = max(tree.rglob("*.bin"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    st = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    by_meta = backup(tree, devs, cat, "--incremental")
    assert by_meta["bytes"] == total  # every mtime moved
    by_content = backup(tree, devs, cat, "--rehash")
    assert by_content["kind"] == "incremental"
    assert by_content["bytes"] == 0 and by_content["reused"] == total
    os.utime(victim)  # content equal to the last set: still reused
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    again = backup(tree, devs, cat, "--rehash")
    assert again["bytes"] == len(data)
    restore_and_compare(tmp_path, tree, cat, again["set"], snapshot(tree))


def test_reused_record_is_checked_against_its_origin(tmp_path, device_dirs):
    """A reused record whose catalog row names the wrong origin set is reported damaged."""
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    tree = make_tree(tmp_path / "src", seed=5, files=5)
    first = backup(tree, devs, cat)
    second = backup(tree, devs, cat, "--incremental")
    assert second["bytes"] == 0
    db = sqlite3.connect(cat)
    with db:
        n = db.execute(
            "UPDATE records SET origin_set=? WHERE set_id=?", (second["set"], second["set"])
        ).rowcount
    db.close()
    assert n > 0
    r = run_cli("verify", "--set", second["set"], "--catalog", cat, "--json")
    assert r.code == 1 and r.json["damaged"]
    assert all("does not match" in d["error"] for d in r.json["damaged"])
    r = run_cli("verify", "--set", first["set"], "--catalog", cat, "--json")
    assert r.code == 0


def test_schema_1_catalog_is_migrated(tmp_path, device_dirs):
    """An old catalog gains the new columns; its files count as changed (ctime unknown)."""
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    tree = make_tree(tmp_path / "src", seed=9, files=5)
    first = backup(tree, devs, cat)
    sqlite_to_schema_4(cat)
    db = sqlite3.connect(cat)
    db.execute("DROP INDEX records_by_origin")  # schema 1 had neither it nor its column
    for table, column in (
        ("files", "ctime_ns"),
        ("files", "ino"),
        ("records", "origin_set"),
        ("records", "origin_file"),
        ("sets", "resumed"),
    ):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.commit()
    db.close()
    with Catalog(cat) as c:
        assert c.meta("schema") == str(SCHEMA_VERSION)
    second = backup(tree, devs, cat, "--incremental")
    assert second["kind"] == "incremental" and second["reused"] == 0
    assert second["bytes"] == first["bytes"]
    restore_and_compare(tmp_path, tree, cat, first["set"], snapshot(tree))


def test_incremental_run_with_a_dead_device_reuses_nothing_on_it(tmp_path, device_dirs):
    """A device dead at the time of an incremental run: files whose records lie on it
    are copied again, so the new set restores with that device gone for good."""
    tree = make_tree(tmp_path / "src", seed=31, files=30, big=(2 << 20, 2 << 20))
    d0, d1 = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    dead = f"faulty+file://{d1}?fail_open=1"
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", dead, "--incremental",
                "--catalog", cat, "--json")  # fmt: skip
    assert r.code == 3, r.err  # degraded: d1 did not open
    doc = r.json
    assert doc["kind"] == "incremental" and 0 < doc["reused"] < doc["bytes"] + doc["reused"]
    with Catalog(cat) as catalog:
        labels = {ref.label for _, ref in catalog.records(doc["set"])}
        dead_label = json.loads((d1 / "label.json").read_text())["label"]
    assert dead_label not in labels  # nothing of the new set lies on the dead device
    shutil.rmtree(d1)
    out = tmp_path / "out"
    r = run_cli("restore", "--set", doc["set"], "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
