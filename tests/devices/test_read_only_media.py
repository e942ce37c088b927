"""Restore, verify and rebuild-catalog work from read-only media (issue 11; optical discs).

The devices are real mounts turned read-only (``mount -o remount,ro`` of a tmpfs), and
every command runs as a real process. Before, every device was opened as if for writing
(a directory device wrote a probe file), so all of them refused.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from fsfixtures import sh, tmpfs_fixture  # noqa: F401 (fixture)
from oldcatalog import sqlite_to_schema_4

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


@pytest.mark.slow
def test_restore_verify_rebuild_from_read_only_mounts(tmp_path, tmpfs):
    tree = make_tree(tmp_path / "src", seed=21, files=30, big=(1_000_000,))
    disks = [tmpfs(f"disc{i}", "16m") for i in range(2)]
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in disks for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    for d in disks:
        sh("mount", "-o", "remount,ro", str(d))
        with pytest.raises(OSError):
            (d / "probe").write_bytes(b"")  # really read-only

    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    r = run_cli("files", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    big = max(tree.rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
    piped = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--catalog", cat, "--stdout", str(big)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == big.read_bytes()
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    r = run_cli("rebuild-catalog", *devs, "--catalog", rebuilt, "--json")
    assert r.code == 0, r.out + r.err
    out2 = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out2), "--catalog", rebuilt, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out2, tree)) == snapshot(tree)


@pytest.mark.slow
def test_backup_onto_a_read_only_mount_is_a_device_failure(tmp_path, tmpfs, device_dirs):
    """Read-only media are for reading: a backup onto one fails that device (exit 3)."""
    tree = make_tree(tmp_path / "src", seed=22, files=10)
    disc = tmpfs("disc", "8m")
    sh("mount", "-o", "remount,ro", str(disc))
    (good,) = device_dirs(1)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(good), "-d", str(disc), "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    assert [d["status"] for d in r.json["devices"]] == ["ok", "failed"]


def test_catalog_copy_on_read_only_media_is_read_in_place(tmp_path, tmpfs):
    """The catalog copy a backup leaves on a device serves sets, files, verify and
    restore straight from a read-only mount (an optical disc): nothing is written."""
    tree = make_tree(tmp_path / "src", seed=22, files=20)
    disks = [tmpfs(f"disc{i}", "16m") for i in range(2)]
    devs = [a for d in disks for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *devs, "--catalog", str(tmp_path / "c.sqlite"), "--json")
    assert r.code == 0, r.out + r.err
    for d in disks:
        sh("mount", "-o", "remount,ro", str(d))
    copy = str(disks[0] / "catalog" / "catalog.sqlite")
    r = run_cli("sets", "--catalog", copy, "--json")
    assert r.code == 0 and r.json["sets"][0]["status"] == "complete", r.out + r.err
    r = run_cli("files", "--catalog", copy, "--json")
    assert r.code == 0 and r.json["files"], r.out + r.err
    r = run_cli("verify", "--catalog", copy, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", copy, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    r = run_cli("backup", str(tree), "-d", str(tmp_path), "--catalog", copy)
    assert r.code in (1, 2) and "Traceback" not in r.err  # a read-only catalog is not written


def test_an_older_catalog_copy_on_read_only_media_is_read(tmp_path, tmpfs):
    """A catalog copy written by an earlier parbackup (schema 3: no stored sizes, no
    attribute or progress tables) on a read-only disc is brought up to date in memory,
    not refused: sets, files, verify and restore work from it."""
    tree = make_tree(tmp_path / "src", seed=23, files=12)
    disc = tmpfs("olddisc", "16m")
    r = run_cli("backup", str(tree), "-d", str(disc), "--catalog", str(tmp_path / "c.sqlite"))
    assert r.code == 0, r.out + r.err
    copy = disc / "catalog" / "catalog.sqlite"
    sqlite_to_schema_4(str(copy))
    db = sqlite3.connect(copy)  # make it what schema 3 wrote
    db.executescript(
        "DROP TABLE file_meta; DROP TABLE progress; ALTER TABLE records DROP COLUMN stored;"
        " UPDATE meta SET value='3' WHERE key='schema';"
    )
    db.close()
    sh("mount", "-o", "remount,ro", str(disc))
    r = run_cli("sets", "--catalog", str(copy), "--json")
    assert r.code == 0 and r.json["sets"][0]["status"] == "complete", r.out + r.err
    r = run_cli("files", "--catalog", str(copy), "--json")
    assert r.code == 0 and r.json["files"], r.out + r.err
    r = run_cli("verify", "--catalog", str(copy), "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", str(copy))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
