"""A catalog whose disk is full still answers every command that only reads it.

SQLite opens a WAL catalog by making its shared-memory file (``-shm``) beside it; on a
full disk that fails with "disk I/O error", so ``sets``, ``files``, ``verify`` and even
``restore`` used to refuse the catalog, just when a full disk makes a restore likely.
When nothing is waiting in the write-ahead log, the main file alone is the whole
catalog: the read-only commands now read it as SQLite's immutable file. A backup still
stops with one line (exit 1). The disk is a real tmpfs, filled to the last block.
"""

from __future__ import annotations

import os

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from fsfixtures import tmpfs_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def fill(directory) -> None:
    """Write into ``directory`` until its file system has not a byte left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 << 10, 1):
            try:
                while os.write(fd, bytes(size)):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def test_read_only_commands_work_on_a_full_catalog_disk(tmp_path, tmpfs, device_dirs):
    tree = make_tree(tmp_path / "src", seed=71, files=30)
    disk = tmpfs("catdisk", "2m")
    cat = str(disk / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    set_id = r.json["set"]
    fill(disk)

    r = run_cli("sets", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert [s["set"] for s in r.json["sets"]] == [set_id]
    r = run_cli("files", "--catalog", cat, "--json")
    assert r.code == 0 and str(tree / "file0.bin") in r.out, r.out + r.err
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)

    r = run_cli("backup", str(tree), *devs, "--catalog", cat)  # writing still stops
    assert r.code == 1 and "Traceback" not in r.err, r.out + r.err
    assert len(r.err.strip().splitlines()) == 1 and cat in r.err, r.err


def test_rebuild_catalog_onto_a_full_disk_leaves_nothing_behind(tmp_path, tmpfs, device_dirs):
    """A rebuild whose new catalog does not fit fails with one line and removes its
    half-written ``NAME.partial`` (and SQLite's files beside it)."""
    tree = make_tree(tmp_path / "src", seed=72, files=300, max_size=2000)
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *devs, "--catalog", str(tmp_path / "cat.sqlite"))
    assert r.code == 0, r.out + r.err
    small = tmpfs("small", "64k")
    r = run_cli("rebuild-catalog", *devs, "--catalog", str(small / "new.sqlite"))
    assert r.code == 1 and "Traceback" not in r.err, r.out + r.err
    assert len(r.err.strip().splitlines()) == 1 and "full" in r.err, r.err
    assert list(small.iterdir()) == []
