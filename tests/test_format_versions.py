"""Volumes of format versions 1 and 2 stay readable (issue 13): a fixture written before
version 4 existed (tests/fixtures/format-v1v2: two devices, no catalog) is rebuilt into a
catalog, verified and restored by today's code, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from conftest import run_cli
from parbackup.format import iter_volume, read_volume_header

pytestmark = pytest.mark.slow  # real processes

FIXTURE = Path(__file__).parent / "fixtures" / "format-v1v2"


def _versions(devs: list[Path]) -> set[int]:
    found = set()
    for vol in sorted(p for d in devs for p in d.rglob("*.pbv")):
        with vol.open("rb") as fh:
            head = read_volume_header(fh)
            for pos, _rec, _payload in iter_volume(fh, head.length):
                fh2 = vol.open("rb")
                fh2.seek(pos)
                found.add(struct.unpack("<4sH", fh2.read(6))[1])
                fh2.close()
    return found


def test_version_1_and_2_volumes_are_read_back(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    devs = []
    for name in ("d1", "d2"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
        devs.append(tmp_path / name)
    assert _versions(devs) == {1, 2}
    catalog = str(tmp_path / "cat.sqlite")
    devargs = [a for d in devs for a in ("-d", str(d))]
    rebuilt = run_cli("rebuild-catalog", *devargs, "--catalog", catalog, "--json")
    assert rebuilt.code == 0, rebuilt.err
    verified = run_cli("verify", "--catalog", catalog, *devargs)
    assert verified.code == 0, verified.err
    target = tmp_path / "out"
    restored = run_cli("restore", "--catalog", catalog, "--target", str(target), *devargs)
    assert restored.code == 0, restored.err
    root = target / expected["source"].lstrip("/")
    for rel, want in expected["entries"].items():
        path = root / rel
        st = os.lstat(path)
        if want["kind"] == "file":
            assert stat.S_ISREG(st.st_mode)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == want["sha256"], rel
        elif want["kind"] == "symlink":
            assert os.readlink(path) == want["target"]
        elif want["kind"] == "dir":
            assert stat.S_ISDIR(st.st_mode)
        elif want["kind"] == "fifo":
            assert stat.S_ISFIFO(st.st_mode)
    assert os.lstat(root / "text.txt").st_ino == os.lstat(root / "hardlink.txt").st_ino
