"""A catalog damaged on its disk never restores a file under another name, mode, owner or
time: SQLite keeps no checksum of its rows, but every record header on the devices says
what its file was (path, mode, owner, mtime; sealed in an encrypted set), and restore and
verify compare the two (readback/reader.py ``open_record``). Before, a flipped byte in a
path restored the file under the wrong name, and a changed mode, owner or time was given
to the file, all with exit 0."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot

PASSWORD = {"PARBACKUP_PASSWORD": "correct horse"}


def backed_up(tmp_path: Path, device_dirs, *, encrypt: bool) -> tuple[Path, str, dict]:
    """A tree backed up by the CLI onto two devices; (tree, catalog, environment)."""
    tree = make_tree(tmp_path / "src", seed=7, files=12, max_size=200_000)
    cat = str(tmp_path / "cat.sqlite")
    env = PASSWORD if encrypt else {}
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli(
        "backup", str(tree), *devs, "--catalog", cat, *(["--encrypt"] if encrypt else []), env=env
    )
    assert r.code == 0, r.err
    assert not os.path.exists(cat + "-wal") or os.path.getsize(cat + "-wal") == 0
    return tree, cat, env


def a_file(tree: Path) -> Path:
    """The largest regular file of the tree (it has records on a device)."""
    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    return max(files, key=lambda p: p.stat().st_size)


def check_refused(tree: Path, cat: str, env: dict, tmp_path: Path, victim: Path, shown: str):
    """restore and verify exit 1 naming ``shown``; every other file restores exactly."""
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, env=env)
    assert r.code == 1, r.out + r.err
    assert "Traceback" not in r.err
    assert f"DAMAGED: {shown}" in r.out and "differ from the record" in r.out
    want = snapshot(tree)
    del want[str(victim.relative_to(tree))]
    got = snapshot(restored_root(out, tree))
    assert got == want  # nothing under the wrong name, the rest byte for byte
    r = run_cli("verify", "--catalog", cat, env=env)
    assert r.code == 1 and f"DAMAGED: {shown}" in r.out + r.err and "Traceback" not in r.err


@pytest.mark.slow
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_byte_flipped_in_a_path_of_the_catalog_file_is_damage(tmp_path, device_dirs, encrypt):
    """A real byte of the catalog file changed on disk, as bit rot would: the file's name."""
    tree, cat, env = backed_up(tmp_path, device_dirs, encrypt=encrypt)
    victim = a_file(tree)
    raw = Path(cat).read_bytes()
    name = os.fsencode(victim)
    assert name in raw
    Path(cat).write_bytes(raw.replace(name, name[:-1] + b"X"))
    shown = os.fsdecode(name[:-1] + b"X")
    check_refused(tree, cat, env, tmp_path, victim, shown)


@pytest.mark.slow
@pytest.mark.parametrize(
    "column", ["mode", "uid", "gid", "mtime_ns"], ids=["mode", "owner", "group", "mtime"]
)
def test_a_changed_mode_owner_or_time_in_the_catalog_is_damage(tmp_path, device_dirs, column):
    tree, cat, env = backed_up(tmp_path, device_dirs, encrypt=column == "mtime_ns")
    victim = a_file(tree)
    db = sqlite3.connect(cat)
    with db:
        n = db.execute(
            f"UPDATE files SET {column}={column}+1 WHERE path=?", (os.fsencode(victim),)
        ).rowcount
    db.close()
    assert n == 1
    check_refused(tree, cat, env, tmp_path, victim, str(victim))


@pytest.mark.slow
def test_a_file_row_lost_from_the_catalog_is_named_not_dropped(tmp_path, device_dirs):
    """A row gone from the catalog (a damaged page, a file cut short) left its file out
    of every restore and verify, exit 0: nothing else named it. The set records how many
    entries it holds (``sets.files``); fewer rows than that are named as damage."""
    tree, cat, env = backed_up(tmp_path, device_dirs, encrypt=False)
    victim = a_file(tree)
    db = sqlite3.connect(cat)
    with db:
        n = db.execute("DELETE FROM files WHERE path=?", (os.fsencode(victim),)).rowcount
    db.close()
    assert n == 1
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json", env=env)
    assert r.code == 1, r.out + r.err
    lost = [d for d in r.json["damaged"] if d["path"].startswith("set ")]
    assert len(lost) == 1 and "rows are lost" in lost[0]["error"]
    want = snapshot(tree)
    del want[str(victim.relative_to(tree))]
    assert snapshot(restored_root(out, tree)) == want  # every file it still lists
    r = run_cli("verify", "--catalog", cat, env=env)
    assert r.code == 1 and "rows are lost" in r.out + r.err, r.out + r.err
