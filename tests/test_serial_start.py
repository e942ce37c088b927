"""The controller's serial start: what a plain local backup does not load.

Every module the controller imports before its first scan is serial time that no
device can share (docs/BENCHMARKS.md, "Serial part (session 9)"): code that only
parity, a cluster or retention needs is imported by the runs that use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli

NOT_LOADED = (
    "parbackup.cluster",  # --cluster only (cli/cluster.py)
    "parbackup.clustertask",
    "parbackup.engine.parity",  # --parity only (engine/backup.py)
    "parbackup.engine.paritystream",
    "parbackup.engine.paritytee",
    "parbackup.redundancy",
    "parbackup.readback.core",  # restore's readers (cluster tasks relay through it)
    "parbackup.readback.relay",
    "parbackup.engine.forget",  # a profile's sources only (cli/profiles.py)
)


def _loaded_by_backup(tmp_path: Path, *extra: str) -> tuple[str, set[str]]:
    src = make_tree(tmp_path / "src", files=5)
    devs = []
    for name in ("d1", "d2", "d3"):
        (tmp_path / name).mkdir()
        devs += ["-d", str(tmp_path / name)]
    argv = ["backup", str(src), *devs, "--catalog", str(tmp_path / "cat.sqlite"), *extra]
    program = (
        "import sys\n"
        "from parbackup.cli.main import cli\n"
        "try:\n"
        f"    cli({argv!r})\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('loaded:', ' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert last.startswith("loaded:"), proc.stdout + proc.stderr
    return proc.stdout, set(last.split()[1:])


def _under(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_plain_backup_loads_no_parity_cluster_or_retention_code(tmp_path: Path) -> None:
    """A local backup without --parity, --cluster or a profile completes without
    importing their modules."""
    out, loaded = _loaded_by_backup(tmp_path)
    assert "exit 0" in out, out
    for package in NOT_LOADED:
        assert not _under(loaded, package), f"{package} loaded by a plain backup"


def test_parity_backup_still_loads_and_writes_parity(tmp_path: Path) -> None:
    """--parity imports what it needs where it is asked for: the set is written with its
    parity device and verifies."""
    out, loaded = _loaded_by_backup(tmp_path, "--parity", "1")
    assert "exit 0" in out, out
    assert "parbackup.engine.parity" in loaded
    result = run_cli("verify", "--catalog", str(tmp_path / "cat.sqlite"))
    assert result.code == 0, result.out + result.err


NOT_LOADED_BY_RESTORE = (
    "parbackup.redundancy",  # a set with parity only (readback/recover.py)
    "pyeclib",
    "parbackup.plan",  # the planner: readback/select.py asks parbackup/coverage.py
    "parbackup.sources",  # a block device as the target only (cli/restore.py)
    "parbackup.selection",  # --include / --exclude only
    "parbackup.readback.image",  # a block device as the target only
    "parbackup.readback.stream",  # --stdout only
    "tomllib",  # --profile only (cli/profiles.py)
)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory) -> tuple[Path, str]:
    """One small set on two directories, shared by the restore tests (they only read it)."""
    root = tmp_path_factory.mktemp("serial-restore")
    src = make_tree(root / "src", files=5)
    catalog = str(root / "cat.sqlite")
    devs = []
    for name in ("d1", "d2"):
        (root / name).mkdir()
        devs += ["-d", str(root / name)]
    backup = run_cli("backup", str(src), *devs, "--catalog", catalog)
    assert backup.code == 0, backup.out + backup.err
    return src, catalog


def _loaded_by_restore(
    tmp_path: Path, backed_up: tuple[Path, str], *extra: str
) -> tuple[str, set[str]]:
    _, catalog = backed_up
    argv = ["restore", "-t", str(tmp_path / "back"), "--catalog", catalog, *extra]
    program = (
        "import sys\n"
        "from parbackup.cli.main import cli\n"
        "try:\n"
        f"    cli({argv!r})\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('loaded:', ' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert last.startswith("loaded:"), proc.stdout + proc.stderr
    return proc.stdout, set(last.split()[1:])


def test_plain_restore_loads_no_parity_planner_or_selection_code(
    tmp_path: Path, backed_up: tuple[Path, str]
) -> None:
    """A whole-set restore into a directory completes without importing what only
    parity, the planner, --include/--exclude, --stdout, an image or a profile needs:
    the controller's imports come before any reader has work."""
    out, loaded = _loaded_by_restore(tmp_path, backed_up)
    assert "exit 0" in out, out
    for package in NOT_LOADED_BY_RESTORE:
        assert not _under(loaded, package), f"{package} loaded by a plain restore"
    assert (tmp_path / "back" / str(backed_up[0]).lstrip("/")).is_dir()


def test_restore_with_exclude_still_loads_selection_and_leaves_out(
    tmp_path: Path, backed_up: tuple[Path, str]
) -> None:
    """--exclude imports the selection rules where it is asked for, and they apply."""
    out, loaded = _loaded_by_restore(tmp_path, backed_up, "--exclude", "file0.bin")
    assert "exit 0" in out, out
    assert "parbackup.selection" in loaded
    back = tmp_path / "back" / str(backed_up[0]).lstrip("/")
    restored = sorted(p.name for p in back.rglob("*") if p.is_file())
    assert restored and "file0.bin" not in restored, restored
    assert (backed_up[0] / "file0.bin").exists()
