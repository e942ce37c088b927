"""Verify of a set whose files carry extended attributes (review8, session 8; found by
the wall8 helper on main 9d47551).

A file's attributes are written as a kind-8 record after its data record
(engine/mover.py ``meta_record``); the catalog keeps them with the file, not a reference
to that record. Verify's frame check (readback/frames.py) wants the records it knows to
tile each volume, so it called a fresh, intact set ``damaged`` (exit 1: "record
expected at X, catalog says Y", "end record does not match the catalog"). It now steps
over those records, checking each one's header and digest: a flipped byte in one is
still damage. Real files with real ``user.*`` attributes on this machine's disk."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_cli


def _set(tmp_path: Path, device_dirs) -> tuple[str, list[Path]]:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(os.urandom(3000 + i))
    for i in (2, 5):
        os.setxattr(src / f"f{i}", "user.note", b"kept-attribute-%d" % i)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    return cat, devs


def test_verify_of_a_set_with_extended_attributes_is_ok(tmp_path, device_dirs) -> None:
    cat, _devs = _set(tmp_path, device_dirs)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err


def test_a_flipped_byte_in_an_attributes_record_is_damage(tmp_path, device_dirs) -> None:
    cat, devs = _set(tmp_path, device_dirs)
    hits = 0
    for vol in (p for d in devs for p in d.rglob("*.pbv")):
        blob = bytearray(vol.read_bytes())
        at = blob.find(b"kept-attribute-")
        if at >= 0:
            blob[at] ^= 0x01
            vol.write_bytes(blob)
            hits += 1
    assert hits
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 1 and r.json["status"] == "damaged", r.out + r.err
