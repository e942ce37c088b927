"""A first end-to-end check: back up a tree onto three directories, restore, compare."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot


def test_backup_restore_roundtrip(tmp_path, tree, device_dirs):
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(tmp_path / "out", tree)) == snapshot(tree)


@pytest.mark.slow
def test_the_readme_demo_runs(tmp_path):
    """``scripts/demo`` (the README's first command, minus its set-up) backs up, verifies,
    restores and finds the restore IDENTICAL."""
    demo = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
    proc = subprocess.run(
        [sys.executable, str(demo)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "IDENTICAL" in proc.stdout
