"""What a backup's processes import at start (issue 10: every process of a short backup
pays its interpreter's start-up, the controller before anything else can begin).

Every process's imports are listed by Python itself (PYTHONPROFILEIMPORTTIME), the
movers' stderr kept (PARBACKUP_DEBUG_WORKERS).
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import SRC, backup_imports


def test_a_backup_without_patterns_never_imports_pathspec(tmp_path):
    """pathspec (gitignore patterns, 12-16 ms of CPU in each process) is imported only when
    a selection has patterns: not by the dispatcher nor by a mover of a plain backup."""
    imported = backup_imports(tmp_path)
    assert not [m for m in imported if m.split(".")[0] == "pathspec"]


def test_a_backup_with_an_exclude_pattern_still_applies_it(tmp_path):
    """The same backup with ``--exclude '*.log'`` imports pathspec where the patterns
    are compiled, and leaves the file out."""
    imported = backup_imports(tmp_path, "--exclude", "**/*.log")
    assert "pathspec" in imported
    listed = subprocess.run(
        [sys.executable, "-m", "parbackup", "files", "--catalog", str(tmp_path / "c.sqlite")],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "a.txt" in listed.stdout
    assert "b.log" not in listed.stdout


def test_a_backup_under_json_never_imports_rich(tmp_path):
    """rich (~30 ms of CPU on the controller's serial start) is imported only by a
    command that prints through it: a ``--json`` backup with nothing else to say never
    loads it, in any process."""
    imported = backup_imports(tmp_path)
    assert not [m for m in imported if m.split(".")[0] == "rich"]


def test_a_backup_without_json_still_prints_its_summary(tmp_path):
    """The same backup without ``--json`` prints its summary (tab-separated when stdout
    is not a terminal), through the console made at its first use."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"plain\n")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", str(src),
         *[a for d in devs for a in ("-d", str(d))], "--catalog", str(tmp_path / "c.sqlite")],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "complete" in proc.stdout
    assert str(devs[0]) in proc.stdout and str(devs[1]) in proc.stdout
