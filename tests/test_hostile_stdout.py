"""``restore --stdout`` of a hard link's later name (hostile8): the bytes of the file it
names, never "matches none"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SRC, run_cli

pytestmark = pytest.mark.slow  # a backup and restores through the CLI


def test_stdout_of_a_hard_links_later_name_gives_the_files_bytes(tmp_path, device_dirs):
    tree = tmp_path / "src"
    tree.mkdir()
    data = os.urandom(700_000)
    (tree / "a-first").write_bytes(data)
    os.link(tree / "a-first", tree / "z-later")  # scanned after: recorded as a hard link
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    r = run_cli("files", "--catalog", cat, "--json")
    kinds = {os.path.basename(f["path"]): f["kind"] for f in r.json["files"]}
    assert kinds["z-later"] == "hardlink", kinds
    for name in ("z-later", "a-first"):
        proc = subprocess.run(
            [sys.executable, "-m", "parbackup", "restore", "--catalog", cat,
             "--stdout", str(tree / name)],
            capture_output=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr  # before: "--stdout needs exactly one file;
        assert proc.stdout == data, name  # '.../z-later' matches none", exit 1
