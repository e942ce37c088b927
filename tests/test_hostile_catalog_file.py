"""A catalog file damaged or cut on its disk is a clear one-line error; rebuild-catalog
recovers from the devices.

SQLite reports a damaged schema with the bytes it could not parse (``near "...": syntax
error``); bytes that are not UTF-8 made Python's sqlite3 fail to decode the message
itself, so every command said ``internal error: UnicodeDecodeError`` instead of naming
the damaged catalog (catalog/store.py).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from conftest import restored_root, run_cli, snapshot


@pytest.fixture
def backed_up(tmp_path, device_dirs):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "d" / "f").write_bytes(os.urandom(20000))
    cat = tmp_path / "cat.sqlite"
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *devs, "--catalog", str(cat))
    assert r.code == 0, r.out + r.err
    return src, cat, devs


def _damage_schema(cat) -> None:
    """Bytes that are not UTF-8 inside a table's CREATE statement (a flipped sector)."""
    data = bytearray(cat.read_bytes())
    at = data.find(b"CREATE TABLE sets")
    assert at >= 0
    data[at + 7 : at + 9] = b"\xb9\x93"  # near "\xb9\x93BLE": syntax error
    cat.write_bytes(bytes(data))


def _cut(cat) -> None:
    os.truncate(cat, os.path.getsize(cat) // 2)


# The schema-bytes case also rebuilds the catalog and restores from it (1.2-2.2 s): it
# runs in the whole suite; the quick subset keeps the cut case (rebuild-catalog's own
# quick tests are in test_rebuild.py).
@pytest.mark.parametrize(
    "damage",
    [pytest.param(_damage_schema, marks=pytest.mark.slow), _cut],
    ids=["schema-bytes", "cut"],
)
def test_a_damaged_catalog_file_is_named_and_rebuild_catalog_recovers(backed_up, tmp_path, damage):
    src, cat, devs = backed_up
    damage(cat)
    for args in (["sets"], ["verify"], ["restore", "--target", str(tmp_path / "out")]):
        r = run_cli(*args, "--catalog", str(cat))
        assert r.code == 1, r.out + r.err
        assert "internal error" not in r.err and "Traceback" not in r.err, r.err
        assert str(cat) in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1, r.err
    if damage is _cut:
        return  # rebuild-catalog reads only the devices: one damage proves it recovers
    new = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *devs, "--catalog", str(new))
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out), "--catalog", str(new))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


@pytest.mark.slow  # seven commands and a rebuild: 5-9 s, the quick subset's slowest
def test_a_catalog_cut_to_nothing_is_refused_not_taken_for_a_new_one(backed_up, tmp_path):
    """A catalog file a crash left empty (0 bytes: ext4 after a power cut, a copy that
    failed) was taken for a new catalog: ``sets`` said there were none (exit 0) and
    wrote an empty catalog over it, and the next backup started a new history and put
    its copy, which knows none of the old sets, on every device over the copy that did.
    Every command now refuses it in one line, writing nothing; rebuild-catalog recovers."""
    src, cat, devs = backed_up
    copies = {d: (Path(d) / "catalog" / "catalog.sqlite").read_bytes() for d in devs[1::2]}
    for name in (f"{cat}-wal", f"{cat}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    os.truncate(cat, 0)
    commands = (
        ["sets"],
        ["files"],
        ["verify"],
        ["restore", "--target", str(tmp_path / "out")],
        ["prune", "--orphans"],
        ["backup", str(src), *devs],
    )
    for args in commands:
        r = run_cli(*args, "--catalog", str(cat))
        assert r.code == 1, (args, r.out + r.err)
        assert f"catalog {cat} is an empty file (0 bytes)" in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err
        assert os.path.getsize(cat) == 0, args
    assert {d: (Path(d) / "catalog" / "catalog.sqlite").read_bytes() for d in copies} == copies
    os.unlink(cat)
    r = run_cli("rebuild-catalog", *devs, "--catalog", str(cat))
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out), "--catalog", str(cat))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_a_new_catalog_is_never_an_empty_file(tmp_path):
    """A new catalog is made whole under another name and linked into place, so an empty
    file at a catalog's path is always one that was cut (never one being made)."""
    cat = tmp_path / "deep" / "new.sqlite"
    r = run_cli(
        "backup", "-", "--stdin-name", "f", "-d", str(tmp_path), "--catalog", str(cat), input=b"x"
    )
    assert r.code == 0, r.out + r.err
    assert os.path.getsize(cat) > 0
    assert sorted(p.name for p in cat.parent.iterdir()) == ["new.sqlite", "new.sqlite.lock"]
