"""A block device written while it is backed up (issue 11).

A device node's times do not move when its content is written, so the image of a
device written during the read used to be stored as good: the set complete, exit 0,
and the image restored a mix of before and after that the device never held. Real
parts: a loop device over a file, a backup stopped at a known byte (the ``faulty+``
wrapper's pause, announced through a FIFO), the device written for real meanwhile
(direct I/O through the loop device, as a program using it would), then the backup
goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SRC, run_cli
from killpoints import pause_point, wait_paused
from test_blockdev import _can_loop, loop  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(bool(_can_loop()), reason=_can_loop()),
]

MiB = 1 << 20


def write_through(dev: str, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` of the block device, straight to it (O_DIRECT)."""
    subprocess.run(
        ["dd", "of=" + dev, "bs=4096", f"seek={offset // 4096}", "oflag=direct",
         "conv=notrunc,fsync", "status=none"],
        input=data,
        check=True,
    )  # fmt: skip


def test_a_block_device_written_during_the_read_is_not_stored_as_good(tmp_path, loop):  # noqa: F811
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(24 * MiB))
    dev = loop(image)
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{devs[0]}?pause_after=2M&gate={gate}", str(devs[1])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", dev, "--catalog", cat, "--json",
         *[a for u in urls for a in ("-d", u)]],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert wait_paused(proc, fifo)
    write_through(dev, 20 * MiB, os.urandom(MiB))  # another program writes the device
    gate.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out.decode() + err.decode()
    doc = json.loads(out)
    assert [p["path"] for p in doc["inconsistent"]] == [dev], doc
    # the set does not hand the image back as if the device had held it
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    assert [s["path"] for s in r.json["skipped"]] == [dev], r.out

    # unwritten, the same device backs up and restores exactly (no false alarm)
    r = run_cli("backup", dev, "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    target = tmp_path / "again"
    r = run_cli("restore", "--target", str(target), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert (target / dev.lstrip("/")).read_bytes() == image.read_bytes()
