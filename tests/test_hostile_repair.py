"""Hostile tests of parity sets across several sets and repairs (REQUIREMENTS K1, K2):
a device of a parity set that is present but lacks one set's volume is read around for
that set only; what it still holds for other sets is read from it, not from parity."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot

pytestmark = pytest.mark.slow


def _two_sets(tmp_path: Path, device_dirs):
    """A full parity set and an incremental one reusing most of its records."""
    src = make_tree(tmp_path / "src", seed=5, files=20, big=(1_500_000, 900_001))
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    sets = []
    for extra in ([], ["--incremental"]):
        r = run_cli("backup", str(src), *args, "--catalog", cat, "--parity", "1", *extra, "--json")
        assert r.code == 0, r.out + r.err
        sets.append(r.json["set"])
        if not extra:
            (src / "file1.bin").write_bytes(random.Random(1).randbytes(700_000))
    assert r.json["reused"] > 0
    return src, devs, cat, sets


@pytest.mark.parametrize("how", ["one volume lost", "device lost, first set repaired"])
def test_a_device_missing_only_one_sets_volume_verifies_recoverable(tmp_path, device_dirs, how):
    """The incremental set's volume on a data device is gone, its parent's is there
    (one volume deleted, or the device lost and only the parent set repaired onto a new
    one): verify must say recoverable, not name the reused files damaged because it
    looked for the parent's volume in the stand-in that decodes the incremental's."""
    src, devs, cat, (first, second) = _two_sets(tmp_path, device_dirs)
    (lost_vol,) = (devs[0] / "sets" / second).glob("*.pbv")
    assert list((devs[0] / "sets" / first).glob("*.pbv"))
    if how == "one volume lost":
        lost_vol.unlink()
    else:
        shutil.rmtree(devs[0])
        new = tmp_path / "new"
        new.mkdir()
        r = run_cli("repair", "--set", first, "--device", str(new), "--catalog", cat)
        assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--set", second, "--catalog", cat, "--json")
    assert r.json["damaged"] == [], r.out + r.err
    assert r.code == 3 and r.json["status"] == "recoverable", r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--set", second, "--target", str(out), "--catalog", cat, "--json")
    assert r.json["status"] == "ok" and r.json["damaged"] == [], r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_a_repair_killed_half_way_is_read_around_then_done_again(tmp_path, device_dirs):
    """A repair SIGKILLed while it writes leaves the replacement labelled as the lost
    device with a volume cut short. Named with ``-d`` (or mounted where the lost one
    was), that device must be read around like any cut volume: verify says
    recoverable and restore gives every byte back; it must not win over the stand-in
    that decodes the column and fail the files it held. A second repair finishes it."""
    src = make_tree(tmp_path / "src", seed=9, files=12, big=(6_000_000, 5_000_001))
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 0, r.out + r.err
    set_id = r.json["set"]
    (vol,) = (devs[0] / "sets" / set_id).glob("*.pbv")
    size = vol.stat().st_size
    shutil.rmtree(devs[0])
    new = tmp_path / "new"
    new.mkdir()
    cmd = [sys.executable, "-m", "parbackup", "repair", "--set", set_id, "--catalog", cat]
    proc = subprocess.Popen(
        [*cmd, "--device", f"{new}?limit=2M"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    part = new / "sets" / set_id / vol.name
    try:  # a real event: the rebuilt volume grows on the replacement
        while proc.poll() is None and not (part.exists() and part.stat().st_size > size // 4):
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the repair ended before the kill"
    assert part.stat().st_size < size
    r = run_cli("verify", "--catalog", cat, "-d", str(new), "--json")
    assert r.json["damaged"] == [], r.out + r.err
    assert r.code == 3 and r.json["status"] == "recoverable", r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", cat, "-d", str(new), "--target", str(out), "--json")
    assert r.json["status"] == "ok" and r.json["damaged"] == [], r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    r = run_cli("repair", "--set", set_id, "--device", str(new), "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    assert vol.name in [p.name for p in (new / "sets" / set_id).iterdir()]
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err


def test_a_restore_read_around_a_lost_device_names_it(tmp_path, device_dirs):
    """A restore that read around a lost device exits 3: its text output must say why
    (before, it printed only the line "restored N entries" and exited 3)."""
    _src, devs, cat, (first, _second) = _two_sets(tmp_path, device_dirs)
    label = json.loads((devs[0] / "label.json").read_text())["label"]
    shutil.rmtree(devs[0])
    out = tmp_path / "out"
    r = run_cli("restore", "--set", first, "--target", str(out), "--catalog", cat)
    assert r.code == 3, r.out + r.err
    assert f"device {label} is missing" in r.out + r.err, r.out + r.err
