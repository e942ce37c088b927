"""A catalog file inside a directory device's own data (session 14).

A catalog given as ``DEV/catalog/catalog.sqlite`` (where every backup puts DEV's copy of
the catalog) made its directory on opening; the backup then refused to label the
"fresh" device, saying it held parbackup volumes it did not hold, and went on degraded
(exit 3) with one device fewer. ``backup`` and ``plan`` now refuse such a catalog
before anything is made, however the device is named (a symlink, a bind mount).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import run_cli

REFUSED = "where parbackup keeps that device's own data"


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "a").write_bytes(b"a" * 1000)
    return root


def _listing(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs for p in d.rglob("*"))


@pytest.mark.parametrize(
    "inside",
    ["catalog/catalog.sqlite", "catalog/deeper/c.sqlite", "sets/c.sqlite"],
)
@pytest.mark.parametrize("via", ["path", "symlink"])
def test_a_catalog_in_a_devices_own_directories_is_refused_before_anything_is_made(
    tmp_path, inside, via
):
    src = _tree(tmp_path / "src")
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    if inside.startswith("sets/"):
        (d1 / "sets").mkdir()  # a data directory that exists already
    base = d1
    if via == "symlink":
        base = tmp_path / "link"
        base.symlink_to(d1)
    cat = base / inside
    before = _listing(d1, d2)
    for command in ("plan", "backup"):
        r = run_cli(command, str(src), "-d", str(d1), "-d", str(d2), "--catalog", str(cat))
        assert r.code == 2, (command, r.err)
        assert REFUSED in r.err and inside.split("/")[0] + "/" in r.err, r.err
        assert _listing(d1, d2) == before  # no catalog, no label, nothing written
    # beside the device's data, the catalog is as good as anywhere: both devices used
    r = run_cli("backup", str(src), "-d", str(d1), "-d", str(d2), "--catalog", str(d1 / "c.db"))
    assert r.code == 0, r.err
    assert (d1 / "label.json").exists() and (d2 / "label.json").exists()


def test_a_catalog_reached_through_a_bind_mount_of_the_device_is_refused(tmp_path):
    src = _tree(tmp_path / "src")
    d1, d2, seen = tmp_path / "d1", tmp_path / "d2", tmp_path / "seen"
    for d in (d1, d2, seen):
        d.mkdir()
    subprocess.run(["mount", "--bind", str(d1), str(seen)], check=True)
    try:
        cat = seen / "catalog" / "catalog.sqlite"
        r = run_cli("backup", str(src), "-d", str(d1), "-d", str(d2), "--catalog", str(cat))
        assert r.code == 2, r.err
        assert REFUSED in r.err, r.err
        assert _listing(d1, d2) == []
    finally:
        subprocess.run(["umount", str(seen)], check=True)
