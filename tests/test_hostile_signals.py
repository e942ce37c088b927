"""SIGINT and SIGTERM at odd moments: what the command line says must be what the
catalog then holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import SRC, default_signals, make_tree, restored_root, run_cli, snapshot
from fsfixtures import Gate


def paused_backup(tmp_path, src, pause: str):
    """A backup of ``src`` onto d0 and a faulty d1 that pauses at a gate (``pause``: the
    faulty device's query), started with default signal handling and paused there:
    (process, catalog path, gate, d0, d1)."""
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{d1}?{pause}&gate={gate}"
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), "-d", str(d0), "-d", slow]
    proc = subprocess.Popen(
        [*cmd, "--catalog", cat, "--json"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    try:
        gate.wait_paused(proc)
    except BaseException:
        proc.kill()
        raise
    return proc, cat, gate, d0, d1


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_backup_interrupted_after_its_set_is_complete_says_so(tmp_path, signum, code):
    """Interrupted while it puts the catalog copy on a device, the set already complete
    (durable, recorded), a backup said "a set in progress is recorded as interrupted":
    the set stayed complete, and a script or a user believing the line would think the
    backup lost. It now names the set as complete (exit 128+N, status interrupted)."""
    src = make_tree(tmp_path / "src", seed=31, files=10, max_size=40_000)
    proc, cat, _gate, _d0, _d1 = paused_backup(tmp_path, src, "pause_catalog=1")
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    doc = json.loads(out)
    assert doc["status"] == "interrupted" and doc["exit_code"] == code
    (info,) = run_cli("sets", "--catalog", cat, "--json").json["sets"]
    assert info["status"] == "complete"
    assert "recorded as interrupted" not in doc["error"], doc["error"]
    assert f"set {info['set']} was already complete" in doc["error"], doc["error"]
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_that_keep_coming_do_not_cut_the_interruption_short(tmp_path, signum, code):
    """Ctrl-C pressed again and again (or a service manager repeating SIGTERM): the
    first stops the backup; the others landed in its clean-up, so that the set was left
    'running' (not recorded interrupted), a traceback was printed from the exit path,
    or the process died of the signal (exit -2) after printing its line. The first one
    now stops the command and the others are ignored. Signals are sent without a pause
    from the first until the process has ended, so every moment of the way out gets some."""
    src = make_tree(tmp_path / "src", seed=32, files=10, max_size=40_000, big=(400_000,))
    proc, cat, gate, d0, d1 = paused_backup(tmp_path, src, "pause_after=64K")
    try:
        sent = 0
        while proc.poll() is None:
            proc.send_signal(signum)
            sent += 1
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == code, (sent, err)
    assert "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["status"] == "interrupted" and "recorded as interrupted" in doc["error"]
    (info,) = run_cli("sets", "--catalog", cat, "--json").json["sets"]
    assert info["status"] == "interrupted"  # at once, not only when the next run looks
    gate.open()
    r = run_cli("backup", str(src), "-d", str(d0), "-d", str(d1), "--catalog", cat)
    assert r.code == 0, r.out + r.err
