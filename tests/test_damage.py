"""Damage on a device: verify and restore find any flipped, cut, missing or extra byte."""

from __future__ import annotations

import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, snapshot
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.format import RECORD_FIXED_SIZE, read_volume_header
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.verify import run_verify


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """A small tree backed up onto two directories; returns (tree, devices, catalog path)."""
    base = tmp_path_factory.mktemp("damage")
    tree = make_tree(base / "src", seed=7, files=12, max_size=3000)
    devs = [base / "d0", base / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(base / "cat.sqlite")
    with Catalog(cat) as catalog:
        report = run_backup([str(tree)], [str(d) for d in devs], catalog)
    assert report.status == "complete"
    return tree, devs, cat


def volumes(devs: list[Path]) -> list[Path]:
    return sorted(p for d in devs for p in d.glob("sets/*/*.pbv"))


def verify_damaged(cat: str) -> list[dict]:
    with Catalog(cat) as catalog:
        return run_verify(catalog).damaged


def record_starts(vol: Path) -> list[int]:
    """Byte positions of the record headers of a volume (from the volume itself)."""
    with open(vol, "rb") as fh:
        pos = read_volume_header(fh).length
    data = vol.read_bytes()
    out = []
    while pos < len(data):
        out.append(pos)
        plen, llen = (int.from_bytes(data[pos + i : pos + i + 4], "little") for i in (116, 120))
        size = int.from_bytes(data[pos + 44 : pos + 52], "little")
        size = 0 if data[pos + 6] == 15 else size
        pos += RECORD_FIXED_SIZE + plen + llen + 4 + size
    assert pos == len(data)
    return out


@contextmanager
def damaged(vol: Path, content: bytes | None):
    """``vol`` holds ``content`` (None: it is gone) for the block; then it is put back."""
    original = vol.read_bytes()
    if content is None:
        vol.unlink()
    else:
        vol.write_bytes(content)
    try:
        yield original
    finally:
        vol.write_bytes(original)


def test_clean_set_verifies(backed_up):
    assert verify_damaged(backed_up[2]) == []


@pytest.mark.slow
def test_one_flipped_byte_anywhere_is_found(backed_up):
    """Every byte of the volume header, of two record headers and of the end record;
    seeded samples of every other header and of the payloads."""
    _, devs, cat = backed_up
    rng = random.Random(5)
    checked = 0
    for vol in volumes(devs):
        data = bytearray(vol.read_bytes())
        starts = record_starts(vol)
        positions = set(range(0, starts[0]))  # the volume header
        for n, s in enumerate(starts):
            header = range(s, min(s + RECORD_FIXED_SIZE + 40, len(data)))
            if n < 2:  # every byte of two whole headers, so every field is hit
                positions.update(header)
            else:
                positions.update(rng.sample(header, 12))
        positions.update(rng.randrange(len(data)) for _ in range(150))
        positions.update(range(len(data) - 140, len(data)))  # the end record
        for pos in sorted(positions):
            if pos >= len(data):
                continue
            original = data[pos]
            data[pos] ^= 1 << rng.randrange(8)
            vol.write_bytes(data)
            assert verify_damaged(cat), f"flip at {pos} of {vol.name} went unnoticed"
            checked += 1
            data[pos] = original
        vol.write_bytes(data)
    assert verify_damaged(cat) == []
    print(f"{checked} single-bit flips, each found by verify")


@pytest.mark.parametrize("cut", [1, 10, 500, 5000])
def test_truncated_volume_is_found(backed_up, cut):
    _, devs, cat = backed_up
    for vol in volumes(devs):
        data = vol.read_bytes()
        with damaged(vol, data[: max(0, len(data) - cut)]):
            assert verify_damaged(cat)


def test_appended_garbage_is_found(backed_up):
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    with damaged(vol, vol.read_bytes() + b"\0"):
        assert any("longer" in d["error"] for d in verify_damaged(cat))


def test_missing_record_is_found(backed_up):
    """Cut one whole record out of the middle of a volume."""
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    a, b = starts[1], starts[2]
    with damaged(vol, data[:a] + data[b:]):
        assert verify_damaged(cat)


def test_missing_volume_is_found(backed_up):
    _, devs, cat = backed_up
    with damaged(volumes(devs)[1], None):
        found = verify_damaged(cat)
        assert found and all(d["error"] for d in found)


def test_restore_refuses_a_damaged_file_and_restores_the_rest(backed_up, tmp_path):
    tree, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = bytearray(vol.read_bytes())
    starts = record_starts(vol)
    # flip a payload byte of the first record that has one
    for s in starts:
        size = int.from_bytes(data[s + 44 : s + 52], "little")
        if size and data[s + 6] == 1:
            plen, llen = (int.from_bytes(data[s + i : s + i + 4], "little") for i in (116, 120))
            pos = s + RECORD_FIXED_SIZE + plen + llen + 4 + size // 2
            path = os.fsdecode(bytes(data[s + RECORD_FIXED_SIZE : s + RECORD_FIXED_SIZE + plen]))
            break
    data[pos] ^= 0x40
    with damaged(vol, bytes(data)), Catalog(cat) as catalog:
        report = run_restore(catalog, RestoreOptions(target=str(tmp_path / "out")))
    assert [d["path"] for d in report.damaged] == [path]
    assert "checksum" in report.damaged[0]["error"]
    got = snapshot(restored_root(tmp_path / "out", tree))
    want = snapshot(tree)
    rel = os.path.relpath(path, tree)
    assert rel not in got
    # the rest is whole; parent dir modes differ only because restore of dirs still ran
    del want[rel]
    assert got == want
    shutil.rmtree(tmp_path / "out")


def test_inserted_byte_is_found(backed_up):
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    at = starts[len(starts) // 2] + 3
    with damaged(vol, data[:at] + b"\x00" + data[at:]):
        assert verify_damaged(cat)


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_restore_names_files_of_a_cut_or_missing_volume(backed_up, tmp_path, how):
    tree, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    cut = starts[len(starts) // 2]
    if how == "truncated":
        vol.write_bytes(data[:cut])
    else:
        vol.unlink()
    try:
        with Catalog(cat) as catalog:
            report = run_restore(catalog, RestoreOptions(target=str(tmp_path / "out")))
    finally:
        vol.write_bytes(data)
    assert report.damaged
    lost = {os.path.relpath(d["path"], tree) for d in report.damaged}
    got = snapshot(restored_root(tmp_path / "out", tree))
    want = snapshot(tree)
    assert not lost & set(got)
    assert {k: v for k, v in want.items() if k not in lost} == got
