"""Helpers shared by the device-failure tests: run a backup, restore, compare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import SRC, restored_root, run_cli, snapshot


def backup(tmp_path: Path, src: Path, devices: list[str], *extra: str):
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devices for a in ("--device", d)]
    return run_cli("backup", str(src), *args, "--catalog", cat, "--json", *extra, timeout=90)


def restore_and_compare(tmp_path: Path, src: Path, remove: list[Path] = ()) -> None:
    """Restore the latest set (after deleting ``remove``) and compare it with ``src``."""
    for d in remove:
        shutil.rmtree(d)
    cat = str(tmp_path / "cat.sqlite")
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err


def dirs(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = tmp_path / f"dev{i}"
        d.mkdir()
        out.append(d)
    return out


def by_url(doc: dict) -> dict[str, dict]:
    return {d["url"]: d for d in doc["devices"]}


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def start_backup(tmp_path: Path, src: Path, devices: list[str], *extra: str):
    """A backup process running in the background (``--json`` on stdout)."""
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devices for a in ("--device", d)]
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), *args, "--catalog", cat]
    return subprocess.Popen(
        [*cmd, "--json", *extra],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, dict, str]:
    """Wait for a background backup: exit code, its JSON document, its stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, json.loads(out), err
