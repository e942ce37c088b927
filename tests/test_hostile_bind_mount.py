"""A device and the catalog reached through a bind mount inside a source are left out
(session-13 hostile round).

The automatic excludes compared paths (symlinks resolved): a device directory, or a
directory above it and the catalog, bind-mounted into the source tree was backed up
like any directory, so every run stored the volumes and catalog copy of the runs before
(100 kB of files gave sets of 100, 215 and 332 kB). Mount points below a source are now
matched to the device's directories by device and inode (engine/selecting.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from conftest import make_tree, run_cli
from parbackup.catalog import Catalog

pytestmark = [
    pytest.mark.slow,  # end to end, real processes: not in the quick subset
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind-mount"),
]


@contextlib.contextmanager
def bind(source, point):
    """``source`` bind-mounted at ``point`` for the block."""
    subprocess.run(["mount", "--bind", str(source), str(point)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def _paths(cat: str, set_id: str) -> set[str]:
    with Catalog(cat) as catalog:
        return {f.entry.path for f in catalog.files(set_id)}


@pytest.mark.parametrize("what", ["device", "directory-above"])
def test_a_device_bind_mounted_into_the_source_is_left_out(tmp_path, what):
    src = make_tree(tmp_path / "src", seed=21, files=8)
    (src / "inner").mkdir()
    outside = tmp_path / "outside"
    device = outside / "disk0"
    device.mkdir(parents=True)
    other = tmp_path / "disk1"
    other.mkdir()
    cat = str(outside / "catalog.sqlite")
    seen = src / "inner" / ("disk0" if what == "directory-above" else "")
    args = ("backup", str(src), "-d", str(device), "-d", str(other), "--catalog", cat, "--json")
    with bind(device if what == "device" else outside, src / "inner"):
        first = run_cli(*args)
        assert first.code == 0, first.err
        second = run_cli(*args)
        assert second.code == 0, second.err
        assert f"left out {str(seen).rstrip('/')}: backup device {device}" in second.err
    assert second.json["bytes"] <= first.json["bytes"], "the second set is not larger"
    for set_id in (first.json["set"], second.json["set"]):
        inside = sorted(p for p in _paths(cat, set_id) if p.startswith(f"{src}/inner/"))
        if what == "directory-above":  # the device and the catalog are left out, no more
            assert inside == [], inside
        assert not any(p.endswith(".pbv") or "catalog.sqlite" in p for p in inside)


def test_only_mounts_of_the_devices_filesystems_are_looked_at(tmp_path):
    """A mount below the source of another filesystem than the devices' and the catalog's
    (and the directories above them) is never looked at (``stat``): a hung network mount
    excluded from the scan must not hold the backup up before it starts. A bind mount of
    the devices' filesystem is."""
    from parbackup.engine.selecting import _filesystems_above, _mounts_inside

    src = tmp_path / "src"
    (src / "other").mkdir(parents=True)
    (src / "bound").mkdir()
    device = tmp_path / "disk0"
    device.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "other")], check=True
    )
    try:
        with bind(device, src / "bound"):
            mine = _filesystems_above([str(device)])
            assert os.stat(src / "other").st_dev not in mine
            found = [p for p, _ident in _mounts_inside(str(src), mine)]
            assert found == [str(src / "bound")], found
            every = mine | {os.stat(src / "other").st_dev}
            assert sorted(p for p, _ident in _mounts_inside(str(src), every)) == sorted(
                [str(src / "bound"), str(src / "other")]
            )
    finally:
        subprocess.run(["umount", "-l", str(src / "other")], check=True)
