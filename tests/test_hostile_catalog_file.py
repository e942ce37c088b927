"""A catalog file damaged or cut on its disk is a clear one-line error; rebuild-catalog
recovers from the devices.

SQLite reports a damaged schema with the bytes it could not parse (``near "...": syntax
error``); bytes that are not UTF-8 made Python's sqlite3 fail to decode the message
itself, so every command said ``internal error: UnicodeDecodeError`` instead of naming
the damaged catalog (catalog/store.py).
"""

from __future__ import annotations

import os

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


@pytest.mark.parametrize("damage", [_damage_schema, _cut], ids=["schema-bytes", "cut"])
def test_a_damaged_catalog_file_is_named_and_rebuild_catalog_recovers(backed_up, tmp_path, damage):
    src, cat, devs = backed_up
    damage(cat)
    for args in (["sets"], ["verify"], ["restore", "--target", str(tmp_path / "out")]):
        r = run_cli(*args, "--catalog", str(cat))
        assert r.code == 1, r.out + r.err
        assert "internal error" not in r.err and "Traceback" not in r.err, r.err
        assert str(cat) in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1, r.err
    new = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *devs, "--catalog", str(new))
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out), "--catalog", str(new))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
