"""verify of a set whose files carry extended attributes (REQUIREMENTS X3, E3).

A file's extended attributes go into a kind-8 metadata record right after its records;
the catalog keeps them with the file and does not list that record. verify's frame check
called every such set damaged (exit 1): "record expected at X, catalog says Y" and "end
record does not match the catalog". It must say ok of an intact set, and still find a
flipped byte in a metadata record.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import restored_root, run_cli

pytestmark = pytest.mark.slow

PW = {"PARBACKUP_PASSWORD": "correct horse battery"}
TAIL = b"value-of-the-smallest-file"


def _devices(tmp_path: Path) -> list[Path]:
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    return devs


def _tree(root: Path) -> Path:
    """Files of several sizes, some with attributes: a large one (split over both
    devices, read in ranges), small ones (read whole), the smallest last in the plan's
    order (its metadata record is the last before a volume's end), and a directory."""
    (root / "d").mkdir(parents=True)
    sizes = {"big": 9_000_000, "a": 60_000, "b": 40_000, "c": 20_000, "d/e": 9_000, "z": 7}
    for i, (name, size) in enumerate(sizes.items()):
        (root / name).write_bytes(os.urandom(size) if size > 100 else b"x" * size)
        if i % 2 == 0:
            os.setxattr(root / name, "user.note", f"attribute of {name}".encode())
    os.setxattr(root / "z", "user.tail", TAIL)
    os.setxattr(root / "d", "user.dir", b"attribute of a directory")
    return root


@pytest.mark.parametrize("options", [(), ("--encrypt", "--compression", "3")])
def test_verify_says_ok_of_a_set_with_extended_attributes(tmp_path: Path, options) -> None:
    src = _tree(tmp_path / "src")
    devs = _devices(tmp_path)
    cat = str(tmp_path / "cat.sqlite")
    args = [arg for d in devs for arg in ("-d", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat, *options, env=PW)
    assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--catalog", cat, "--json", env=PW)
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", cat, "--target", str(out), env=PW)
    assert r.code == 0, r.out + r.err
    restored = restored_root(out, src)
    assert os.getxattr(restored / "z", "user.tail") == TAIL
    assert os.getxattr(restored / "d", "user.dir") == b"attribute of a directory"


def test_verify_finds_a_flipped_byte_in_a_metadata_record(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    devs = _devices(tmp_path)
    cat = str(tmp_path / "cat.sqlite")
    args = [arg for d in devs for arg in ("-d", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat)
    assert r.code == 0, r.out + r.err
    hits = []
    for dev in devs:
        for vol in (dev / "sets").rglob("*"):
            if vol.is_file() and TAIL in (data := vol.read_bytes()):
                hits.append((vol, data))
    assert len(hits) == 1, hits
    vol, data = hits[0]
    at = data.index(TAIL)
    vol.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 1 and r.json["status"] == "damaged", r.out + r.err
    assert any("metadata" in d["error"] for d in r.json["damaged"]), r.json
