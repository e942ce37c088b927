"""Movers the CLI warms ahead (cli/main.py, the movers' fork server) end with a backup that
is refused before it starts its movers: a usage error, a bad device URL, a missing
source, a catalog in use by another run. (review of the overlap change, session 6)

The movers are started with ``PARBACKUP_DEBUG_WORKERS``: their stderr is the CLI's, and
the CLI's stderr reaches its end only once every process holding it has ended, so
reading it to the end is the real event that says no mover outlived the CLI (a leaked
one fails the test on the timeout). Whether a mover got as far as its imports depends
on the machine's load (one the CLI leaves early is killed by the kernel,
``die_with_parent``), so the test does not count them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SRC
from parbackup.catalog import Catalog


def refused_backup(tmp_path, *args: str) -> tuple[int, str]:
    """Run ``parbackup backup ARGS`` with two -d; (exit code, stderr) once the CLI and
    every process sharing its stderr have ended (a leaked mover fails on the timeout)."""
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "PARBACKUP_DEBUG_WORKERS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", "-d", str(devs[0]), "-d", str(devs[1]),
         *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "case",
    ["unknown option", "bad device URL", "missing source", "catalog in use"],
)
def test_movers_started_ahead_end_with_a_refused_backup(tmp_path, case) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    cat = str(tmp_path / "cat.sqlite")
    args = {
        "unknown option": [str(src), "--catalog", cat, "--no-such-option"],
        "bad device URL": [str(src), "-d", "nosuch://x", "--catalog", cat],
        "missing source": [str(tmp_path / "gone"), "--catalog", cat],
        "catalog in use": [str(src), "--catalog", cat],
    }[case]
    if case == "catalog in use":
        with Catalog(cat) as held:
            held.lock_for_run()  # another run holds the catalog
            code, err = refused_backup(tmp_path, *args)
    else:
        code, err = refused_backup(tmp_path, *args)
    want = {"unknown option": 2, "bad device URL": 2, "missing source": 1, "catalog in use": 1}
    assert code == want[case], err[-2000:]
    assert "Traceback" not in err  # (a mover's would be here too)
