"""The catalog's own file system failing during a backup (hostile8): it turns read-only
(a real ext4 error with ``errors=remount-ro``) or fills up (a real tmpfs) while a device
is paused mid-volume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from fsfixtures import Gate, ext4_fixture, fill_up, tmpfs_fixture, turn_read_only  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(240)]


def _paused_backup(src: Path, devs: list[Path], cat: str, gate: Gate) -> subprocess.Popen:
    slow = f"faulty+file://{devs[0]}?pause_after=300K&gate={gate}"
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), "--catalog", cat]
    return subprocess.Popen(
        [*cmd, "-d", slow, "-d", str(devs[1])],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_the_catalogs_file_system_failing_mid_backup_is_one_line_and_no_complete_set(
    tmp_path: Path, device_dirs, ext4, tmpfs, fault
):
    src = make_tree(tmp_path / "src", seed=3, files=60, max_size=200_000, big=(2_000_000,))
    devs = device_dirs(2)
    catdir = ext4("catfs", 64) if fault == "read-only" else tmpfs("catfs", "4m")
    cat = str(catdir / "cat.sqlite")
    gate = Gate(tmp_path / "gate")
    proc = _paused_backup(src, devs, cat, gate)
    try:
        gate.wait_paused(proc)
        if fault == "read-only":
            turn_read_only(catdir)
        else:
            fill_up(catdir)
        gate.open()
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"parbackup: error: catalog {cat}: "), err
    assert "Traceback" not in out + err and "internal error" not in err
    why = "disk I/O error" if fault == "read-only" else "database or disk is full"
    assert why in err, err
    # the catalog still answers, and calls nothing complete
    r = run_cli("sets", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert [s["status"] for s in r.json["sets"]] == ["running"], r.json
    r = run_cli("restore", "--catalog", cat, "--target", str(tmp_path / "r"))
    assert r.code == 1 and "holds no complete backup set" in r.err, r.err


def test_commands_that_write_on_a_full_catalog_disk_name_the_catalog(
    tmp_path: Path, device_dirs, tmpfs
):
    """``forget``, ``prune`` and ``backup`` on a catalog whose tmpfs is full: one line
    naming the catalog, exit 1, nothing changed. Before, the run lock's pid write failed
    first: "parbackup: error: No space left on device", naming no file."""
    src = make_tree(tmp_path / "src", seed=4, files=10, max_size=100_000)
    devs = device_dirs(2)
    cat = str(tmpfs("catfs", "2m") / "cat.sqlite")
    dargs = ["-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat]
    for _ in range(2):
        r = run_cli("backup", str(src), *dargs)
        assert r.code == 0, r.err
    volumes = sorted(p for d in devs for p in d.rglob("*.pbv"))
    fill_up(Path(cat).parent)
    for args in (
        ["forget", "--keep-last", "1", "--prune", "--catalog", cat],
        ["prune", "--orphans", "--catalog", cat],
        ["backup", str(src), *dargs],
    ):
        r = run_cli(*args)
        assert r.code == 1, (args, r.out, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and cat in lines[0], (args, r.err)
    assert sorted(p for d in devs for p in d.rglob("*.pbv")) == volumes
    r = run_cli("sets", "--catalog", cat, "--json")
    assert [s["status"] for s in r.json["sets"]] == ["complete", "complete"], r.out
