"""A restore whose target filesystem turns read-only half way (a real ext4 error with
``errors=remount-ro``): the restore fails in clear lines naming what it could not
finish, never with an internal error, and never says ok."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from fsfixtures import Gate, ext4_fixture, turn_read_only  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(180)]


def test_restore_target_turns_read_only_mid_restore(tmp_path: Path, device_dirs, ext4):
    src = make_tree(tmp_path / "src", seed=2, files=30, max_size=100_000, big=(900_000, 1))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    target = ext4("target", 64)
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{devs[0]}?pause_read=200K&gate={gate}"
    cmd = [sys.executable, "-m", "parbackup", "restore", "--catalog", cat, "--json"]
    proc = subprocess.Popen(
        [*cmd, "--target", str(target), "-d", slow, "-d", str(devs[1])],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        gate.wait_paused()  # a real event: the reader stopped part way through
        turn_read_only(target)
        gate.open()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    doc = json.loads(out)
    assert proc.returncode == 1, (out, err)
    assert "internal error" not in out + err, (out, err)
    assert doc["status"] != "ok", doc
    errors = [d["error"] for d in doc.get("damaged", [])] or [doc.get("error", "")]
    assert any("Read-only file system" in e for e in errors), doc
