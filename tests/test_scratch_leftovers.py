"""What a killed command left in $TMPDIR is taken away by the next one (parbackup/scratch.py).

``rebuild-catalog`` with a device lost rebuilds that device's volumes from parity into a
scratch directory: up to a whole device's worth of bytes. Killed there (SIGKILL runs no
clean-up), it used to leave that directory in $TMPDIR for ever; nothing looked at it
again. Now the next command that needs scratch room (every backup does) removes it, and
never one a live command still holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, run_cli
from killpoints import pause_point, wait_paused


def scratch(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("parbackup-"))


@pytest.mark.slow
def test_a_killed_rebuild_leaves_no_scratch_directory_for_good(tmp_path, device_dirs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(24 << 20))
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], "--catalog",
                cat, "--parity", "1")  # fmt: skip
    assert r.code == 0, r.out + r.err
    shutil.rmtree(devs[1] / "sets")  # a data device lost: rebuild-catalog decodes it
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmp)}
    # the scan reads the device once; half way through the second reading it pauses
    read = sum(f.stat().st_size for f in (devs[0] / "sets").rglob("*") if f.is_file()) * 3 // 2

    def rebuild(name: str, *, pause: bool) -> subprocess.Popen:
        first = str(devs[0])
        if pause:
            first = f"faulty+file://{devs[0]}?pause_read={read}&gate={tmp_path / 'gate'}"
        return subprocess.Popen(
            [sys.executable, "-m", "parbackup", "rebuild-catalog", "-d", first,
             "-d", str(devs[2]), "--catalog", str(tmp_path / name)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    fifo = pause_point(tmp_path / "gate")
    paused = rebuild("one.sqlite", pause=True)
    try:
        assert wait_paused(paused, fifo)
        held = scratch(tmp)
        assert len(held) == 1  # the lost device's volumes are being rebuilt there
        # another command meanwhile leaves the live one's directory alone
        assert rebuild("two.sqlite", pause=False).wait(120) == 0
        assert scratch(tmp) == held
    finally:
        paused.send_signal(signal.SIGKILL)
        paused.wait(30)
    assert scratch(tmp) == held  # what the killed run left
    assert rebuild("three.sqlite", pause=False).wait(120) == 0
    assert scratch(tmp) == []  # taken away by the next command
