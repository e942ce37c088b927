"""One writer per tape: a tape's medium is locked while a run writes or reads it.

Two backups started onto the same tape image at once both wrote it: the second truncated
the image (``O_TRUNC`` at its open) under the first, whose set then named a tape that no
longer held it. The tape device now ``flock``s the opened medium, exclusively to write
and shared to read, never waiting, and truncates an image only once locked: the second
writer is refused with "another run is writing this tape" before it changes a byte, a
backup is refused while a restore or verify reads the tape, and a reader is refused while
a backup writes it. Real processes on real images, paused by the ``faulty+`` device's
FIFO (no sleeps).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from killpoints import pause_point, wait_paused
from parbackup.devices.registry import open_device
from parbackup.errors import DeviceError


@contextmanager
def paused(gate: Path, *args: str) -> Iterator[subprocess.Popen]:
    """``parbackup ARGS`` run until its ``faulty+`` device pauses at ``gate``; the block
    runs while it waits there, then it is let go and must end with 0."""
    fifo = pause_point(gate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", *args],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        yield proc
        gate.touch()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def refused_backup(tree: Path, image: Path, cat: Path, doing: str) -> None:
    """A backup onto ``image`` is refused, naming the run that holds it (``doing``)."""
    r = run_cli("backup", str(tree), "-d", f"tape://{image}", "--catalog", str(cat), "--json")
    assert r.code == 1, r.out + r.err
    assert f"tape://{image}: another run is {doing} this tape" in r.out + r.err


def test_tape_written_twice(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=8, files=12, big=(1_500_000,))
    image, gate = tmp_path / "tape.img", tmp_path / "gate"
    first = f"faulty+tape://{image}?pause_after=300K&gate={gate}"
    cat = tmp_path / "cat.sqlite"
    with paused(gate, "backup", str(tree), "-d", first, "--catalog", str(cat)):
        written = image.read_bytes()
        assert written  # the first run's header, label and part of its volume
        refused_backup(tree, image, tmp_path / "other.sqlite", "writing")
        assert image.read_bytes() == written  # not a byte changed
        reader = open_device(f"tape://{image}")
        reader.open(write=False)
        with pytest.raises(DeviceError, match="another run is writing this tape"):
            reader.read_label()
        reader.close()
    r = run_cli("verify", "--catalog", str(cat))
    assert r.code == 0, r.out + r.err  # the first run's tape is whole


def test_a_tape_being_read_is_not_written(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=9, files=12, big=(1_500_000,))
    image, gate = tmp_path / "tape.img", tmp_path / "gate"
    cat = tmp_path / "cat.sqlite"
    r = run_cli("backup", str(tree), "-d", f"tape://{image}", "--catalog", str(cat))
    assert r.code == 0, r.out + r.err
    before = image.read_bytes()
    slow = f"faulty+tape://{image}?pause_read=0&gate={gate}"
    with paused(gate, "verify", "--catalog", str(cat), "--device", slow):
        refused_backup(tree, image, tmp_path / "other.sqlite", "reading")
        assert image.read_bytes() == before
    r = run_cli("sets", "--catalog", str(cat), "--json")
    assert [s["status"] for s in r.json["sets"]] == ["complete"], r.out + r.err
