"""What a backup's processes import at start (issue 10: every process of a short backup
pays its interpreter's start-up, the controller before anything else can begin).

Every process's imports are listed by Python itself (PYTHONPROFILEIMPORTTIME), the
movers' stderr kept (PARBACKUP_DEBUG_WORKERS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest

from conftest import SRC, backup_imports
from parbackup.cli.early import backup_args, movers_named


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


def _one_file_and_two_devices(tmp_path):
    """A source holding one small file, and two empty device directories."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"plain\n")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    return src, devs


def test_a_backup_without_json_still_prints_its_summary(tmp_path):
    """The same backup without ``--json`` prints its summary (tab-separated when stdout
    is not a terminal), through the console made at its first use."""
    src, devs = _one_file_and_two_devices(tmp_path)
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


def test_the_movers_a_command_line_names_are_counted_before_it_is_parsed():
    assert movers_named(["/src", "-d", "/a", "--device", "/b", "--device=/c", "-d/e"]) == 4
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "-d", "/c", "--parity", "1"]) == 2
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--parity=2"]) == 0
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--cluster", "tcp://x:1"]) == 0
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--help"]) == 0
    assert movers_named(["--profile", "home"]) == 0


def test_the_command_is_told_a_backup_before_it_is_parsed():
    """cli/early.py: a backup past the program's own options, nothing else."""
    assert backup_args(["backup", "/src", "-d", "/a"]) == ["/src", "-d", "/a"]
    assert backup_args(["-vv", "--log-file", "backup", "backup", "/s"]) == ["/s"]
    assert backup_args(["-q", "--log-file=/l", "backup", "-d", "/a"]) == ["-d", "/a"]
    assert backup_args(["restore", "backup"]) is None
    assert backup_args(["--help", "backup"]) is None
    assert backup_args(["--version"]) is None
    assert backup_args([]) is None


SERVER_START = """
import os, sys

def _hook(event, args):
    if event == "subprocess.Popen" and "parbackup.forkserver" in " ".join(map(str, args[1])):
        with open(os.environ["SERVER_START_LOG"], "a") as fh:
            fh.write(" ".join(m for m in ("click", "parbackup.cli.main", "parbackup.catalog")
                              if m in sys.modules) + "\\n")

sys.addaudithook(_hook)
"""


@pytest.mark.parametrize("entry", ["-m parbackup", "console script"])
def test_the_fork_server_starts_before_click_is_imported(tmp_path, entry):
    """A backup's fork server starts before the program imports click, its CLI or the
    catalog (cli/early.py), whichever entry point runs it: a ``sitecustomize`` in the
    program's process writes which of them ``sys.modules`` holds when it starts the
    server (the ``subprocess.Popen`` audit event)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SERVER_START)
    log = tmp_path / "server-start.log"
    src, devs = _one_file_and_two_devices(tmp_path)
    if entry == "-m parbackup":
        program = [sys.executable, "-m", "parbackup"]
    else:  # what pyproject.toml's console script runs
        with open(os.path.join(os.path.dirname(SRC), "pyproject.toml"), "rb") as fh:
            script = tomllib.load(fh)["project"]["scripts"]["parbackup"]
        module, _, func = script.partition(":")
        program = [sys.executable, "-c", f"from {module} import {func}; {func}()"]
    proc = subprocess.run(
        [*program, "-v", "backup", str(src), *[a for d in devs for a in ("-d", str(d))],
         "--catalog", str(tmp_path / "c.sqlite"), "--json"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), SRC]),
             "SERVER_START_LOG": str(log)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert log.read_text().splitlines() == [""]  # started once, none of them imported


def test_a_backup_imports_the_mover_once_whatever_its_devices(tmp_path):
    """The movers are forks of one server that imported the mover (engine/movers.py):
    with two devices, the modules only a mover uses are imported once, not once per
    mover (``backup_imports`` checks that the backup completed)."""
    imported = backup_imports(tmp_path)
    for module in ("parbackup.engine.moversource", "parbackup.engine.records"):
        assert imported.count(module) == 1, module


SLOW_MOVER = """
import os, sys, time
if "parbackup.engine.mover" in sys.argv:  # only the movers' fork server starts slowly
    time.sleep(float(os.environ["SLOW_MOVER_START"]))
"""


@pytest.mark.slow  # waits out the 3 s start by design; the module's other tests stay quick
def test_a_slow_mover_start_does_not_count_against_the_device_timeout(tmp_path):
    """On a loaded machine the movers' start may take longer than ``--device-timeout``:
    the timeout counts from the mover's ``Started``, so healthy devices are not failed
    for it (they were: "no answer within 1 seconds"). The slow start is real: the
    movers' fork server (engine/movers.py) runs a ``sitecustomize`` that takes 3 s."""
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW_MOVER)
    src, devs = _one_file_and_two_devices(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", str(src), "--device-timeout", "1",
         *[a for d in devs for a in ("-d", str(d))], "--catalog", str(tmp_path / "c.sqlite"),
         "--json"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "slow"), SRC]),
             "SLOW_MOVER_START": "3"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [d["status"] for d in report["devices"]] == ["ok", "ok"]
