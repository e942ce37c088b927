"""Volumes written by earlier versions stay readable (docs/FORMAT.md "Versioning").

tests/fixtures/v1 and tests/fixtures/v2 are two-device backups written by parbackup at
commit b78fecb (before record version 3): v1 holds only record version 1 (files, a
directory, a symlink), v2 adds version-2 records (a hard link, a FIFO). Each test
reads the volumes record by record, rebuilds a catalog from the devices alone and
restores every file from it.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from parbackup.catalog import Catalog
from parbackup.engine.rebuild import rebuild_catalog
from parbackup.format import iter_volume, read_volume_header
from parbackup.readback.restore import RestoreOptions, run_restore

FIXTURES = Path(__file__).parent / "fixtures"


def _volumes(root: Path) -> list[Path]:
    return sorted(root.glob("dev-*/sets/*/*.pbv"))


def _read_all(root: Path) -> list[tuple[int, str, bytes, bytes, bytes]]:
    """(record version, kind, path, link, payload) of every record of every volume."""
    out = []
    for volume in _volumes(root):
        raw = volume.read_bytes()
        with open(volume, "rb") as stream:
            start = read_volume_header(stream).length
            for position, header, payload in iter_volume(stream, start):
                (version,) = struct.unpack_from("<H", raw, position + 4)
                out.append((version, header.kind, header.path, header.link, payload))
    return out


@pytest.mark.parametrize(
    ("name", "versions", "kinds"),
    [("v1", {1}, {"file", "dir", "symlink"}), ("v2", {1, 2}, {"file", "dir", "hardlink", "fifo"})],
)
def test_old_volumes_read_record_by_record(name, versions, kinds):
    records = _read_all(FIXTURES / name)
    assert {r[0] for r in records} == versions
    assert {r[1] for r in records} == kinds


def _restore_fixture(name: str, tmp_path: Path) -> Path:
    devices = []
    for dev in sorted((FIXTURES / name).glob("dev-*")):
        copy = tmp_path / dev.name
        shutil.copytree(dev, copy)
        devices.append(str(copy))
    catalog_path = str(tmp_path / "rebuilt.sqlite")
    report = rebuild_catalog(devices, catalog_path)
    assert [s["status"] for s in report.sets] == ["complete"], report.sets
    target = tmp_path / "target"
    with Catalog(catalog_path, create=False) as catalog:
        restored = run_restore(catalog, RestoreOptions(target=str(target)))
    assert restored.exit_code == 0, restored.to_json()
    return target / "tmp/meta/fx" / ("src1" if name == "v1" else "src2")


def test_version_1_volumes_rebuild_and_restore(tmp_path):
    root = _restore_fixture("v1", tmp_path)
    assert (root / "hello.txt").read_bytes() == b"hello version one\n"
    assert stat.S_IMODE((root / "hello.txt").stat().st_mode) == 0o640
    assert (root / "docs/notes.md").read_bytes() == b"notes\n"
    assert os.readlink(root / "link") == "hello.txt"


def test_version_2_volumes_rebuild_and_restore(tmp_path):
    root = _restore_fixture("v2", tmp_path)
    assert (root / "data.txt").read_bytes() == b"version two data\n"
    assert (root / "data.txt").stat().st_ino == (root / "data-link.txt").stat().st_ino
    assert stat.S_ISFIFO((root / "pipe").lstat().st_mode)
