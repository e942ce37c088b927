"""Prune's compaction keeps the kind-8 "meta" records (extended attributes) of the files
it keeps (issue 13): a catalog rebuilt from the compacted devices alone restores those
files with their attributes. Runs killed at a known byte offset (tests/killpoints.py),
resumed by a complete backup, then pruned, as in tests/test_reclaim.py."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli
from killpoints import KILLED_RUN, change_a_file_held_whole, killed_run
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.errors import FormatError
from parbackup.format import iter_volume, read_volume_header
from test_crypto_prune import ENCRYPTED_RUN, PW
from test_metadata import xattrs_of

pytestmark = pytest.mark.slow  # end to end, real processes


def metas(devs: list[Path]) -> dict[tuple[str, bytes, int], bytes]:
    """(volume name, set id, file id) -> payload (as stored) of every kind-8 record on
    the devices; a killed run's volume is read up to where it was cut (its header too:
    the kill may find a mover that has just made a volume, as it did once in CI)."""
    found = {}
    for volume in sorted(p for d in devs for p in d.glob("sets/*/*.pbv")):
        with open(volume, "rb") as stream, contextlib.suppress(FormatError):
            start = read_volume_header(stream).length
            with contextlib.suppress(FormatError):  # a cut volume ends without end record
                for _position, header, payload in iter_volume(stream, start):
                    if header.kind == "meta":
                        found[(volume.name, header.set_id, header.file_id)] = payload
    return found


def tag_files(tree: Path) -> dict[str, dict[str, bytes]]:
    """Give every regular file two attributes of its own; relative path -> attributes."""
    tagged = {}
    for p in sorted(tree.rglob("*")):
        if p.is_file() and not p.is_symlink():
            os.setxattr(p, "user.name", p.name.encode())
            os.setxattr(p, "user.size", str(p.stat().st_size).encode())
            tagged[str(p.relative_to(tree))] = xattrs_of(p)
    return tagged


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_compaction_keeps_meta_records_and_a_rebuilt_catalog_restores_them(
    tmp_path, device_dirs, encrypted
):
    """Encrypted too: a sealed meta record is bound to its set, file, device and volume
    (which compaction keeps), not to its position, so it is copied without the key."""
    tree = make_tree(tmp_path / "src", seed=79, files=120, max_size=200_000)
    tagged = tag_files(tree)
    devs = device_dirs(2)
    dargs = [a for d in devs for a in ("-d", str(d))]
    cat = str(tmp_path / "cat.sqlite")
    env, script = {}, KILLED_RUN
    if encrypted:
        env, script = PW, ENCRYPTED_RUN
        KeyFile.create(PW["PARBACKUP_PASSWORD"].encode())[0].save(key_path(cat))
    assert killed_run(tmp_path, 0, cat, tree, devs, "2MiB", script), "the run ended unpaused"
    # a file the killed run's catalog holds whole next to others, changed now: its records
    # in that volume are dead and the others' live, so the volume is partly live whatever
    # the dead tail the kill left (compaction's trigger)
    change_a_file_held_whole(cat, tree)
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--json", env=env)
    assert r.code == 0, r.err
    assert r.json["status"] == "complete" and r.json["reused"] > 0
    before = {k[1:]: payload for k, payload in metas(devs).items()}
    dry = run_cli("prune", "--orphans", "--dry-run", "--catalog", cat, "--json", env=env)
    assert dry.code == 0, dry.err
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json", env=env)
    assert r.code == 0, r.err
    assert r.json["compacted"], r.json
    # the dry run counted the meta records compaction copies: it freed what it said
    assert dry.json["reclaimed_bytes"] == r.json["reclaimed_bytes"], (dry.json, r.json)
    # the compacted volumes hold the meta records of the files they kept, as they were
    kept = {k: v for k, v in metas(devs).items() if ".c1." in k[0]}
    assert kept, "the compacted volumes hold no meta record"
    assert all(before[k[1:]] == payload for k, payload in kept.items())

    # a catalog rebuilt from the devices alone: the killed run's set holds the files the
    # complete set reused (its compacted volumes); restored, they have their attributes
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    r = run_cli("rebuild-catalog", *dargs, "--catalog", rebuilt, "--json", env=env)
    assert r.code in (0, 3), r.out + r.err
    restored_files = 0
    for found in r.json["sets"]:
        target = tmp_path / f"out-{found['set']}"
        r2 = run_cli("restore", "--catalog", rebuilt, "--set", found["set"], "--target",
                     str(target), "--json", env=env)  # fmt: skip
        assert r2.code in (0, 3), r2.out + r2.err
        out = restored_root(target, tree)
        for rel, attrs in tagged.items():
            if (out / rel).exists():
                assert (out / rel).read_bytes() == (tree / rel).read_bytes(), rel
                assert xattrs_of(out / rel) == attrs, (found["status"], rel)
                restored_files += 1
    assert restored_files >= len(tagged)
