"""docs/OPERATIONS.md's recipes, run as written: the monthly restore test script against
a real profile and backup, and the systemd units through systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli

DOC = (Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md").read_text()


def block_after(marker: str, lang: str) -> str:
    """The first fenced ``lang`` block after the line holding ``marker``."""
    rest = DOC[DOC.index(marker) :]
    match = re.search(rf"```{lang}\n(.*?)```", rest, re.S)
    assert match, marker
    return match.group(1)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("jq") and shutil.which("shuf")), reason="needs jq and shuf")
def test_the_monthly_restore_test_passes_and_catches_a_difference(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", seed=5, files=25)
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.home]\nsources = ["{src}"]\ndevices = ["{devs[0]}", "{devs[1]}"]\n'
        f'catalog = "{tmp_path}/cat.sqlite"\n'
    )
    env = {"PARBACKUP_CONFIG": str(config), "PARBACKUP_CATALOG": ""}
    assert run_cli("backup", "--profile", "home", env=env).code == 0
    script = tmp_path / "restore-test"
    script.write_text(block_after("## A monthly restore test", "sh"))
    bin_dir = tmp_path / "bin"  # `parbackup` on PATH, from this checkout
    bin_dir.mkdir()
    (bin_dir / "parbackup").write_text(f'#!/bin/sh\nexec {sys.executable} -m parbackup "$@"\n')
    (bin_dir / "parbackup").chmod(0o755)
    full_env = {**os.environ, **env, "PYTHONPATH": SRC, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    ok = subprocess.run(["sh", str(script), "home"], env=full_env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "restore test of home passed" in ok.stdout

    victim = src / "file0.bin"  # same size and mtime, other bytes: only cmp can tell
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    script.write_text(script.read_text().replace("shuf -n 200", "cat"))  # check every file
    bad = subprocess.run(["sh", str(script), "home"], env=full_env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"differs: {victim}" in bad.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_units_are_valid(tmp_path: Path) -> None:
    service = block_after("`/etc/systemd/system/parbackup@.service`", "ini")
    timer = block_after("`/etc/systemd/system/parbackup@.timer`", "ini")
    exe = tmp_path / "parbackup"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "parbackup@home.service").write_text(
        service.replace("/usr/local/bin/parbackup", str(exe))
    )
    (tmp_path / "parbackup@home.timer").write_text(timer)
    r = subprocess.run(
        ["systemd-analyze", "verify", "parbackup@home.service", "parbackup@home.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "parbackup@" not in r.stderr, r.stderr  # no complaint about our units
