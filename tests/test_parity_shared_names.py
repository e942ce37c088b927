"""A surviving device read through a ``shared://`` spool (devices/shared.py) is named as
itself in what a restore or verify reports (review8, session 8).

Its reader used to report the spool's spec (``shared:///tmp/parbackup-rebuild-.../
LABEL.shared0.json``, gone after the command) as its device. Verify finds a damaged
volume's device by its URL to read it from parity too: with ``--parity 2``, one device
missing and a surviving device's volume damaged at its end record, verify said
``damaged`` (exit 1) where the set is recoverable (exit 3), and named that scratch path.
The devices are SFTP hosts (a real sshd: devices over a link are the ones shared); the
damage is a flipped byte on the host's disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_tree, run_cli

pytestmark = pytest.mark.slow


def test_verify_reads_a_damaged_survivor_from_parity_with_a_device_missing(
    tmp_path: Path, device_dirs, sshd
) -> None:
    make_tree(tmp_path / "src", seed=12, files=30, big=(4_000_000, 3_000_001))
    devs = device_dirs(5)
    cat = str(tmp_path / "cat.sqlite")
    urls = [sshd.url(d) for d in devs]
    args = [a for u in urls for a in ("--device", u)]
    r = run_cli("backup", str(tmp_path / "src"), *args, "--catalog", cat, "--parity", "2")
    assert r.code == 0, r.out + r.err
    data = [d for d in devs if any(Path(d).glob("sets/*/*.pbv"))]
    assert len(data) == 3
    shutil.rmtree(data[1])  # one data device lost
    (volume,) = Path(data[0]).glob("sets/*/*.pbv")
    blob = bytearray(volume.read_bytes())
    blob[-10] ^= 0xFF  # the volume's end record, not a record's bytes
    volume.write_bytes(blob)

    r = run_cli("verify", "--catalog", cat, "--json")
    assert "shared://" not in r.out, r.out
    assert r.code == 3 and r.json["status"] == "recoverable", r.out + r.err
    missing = {m["url"]: m["error"] for m in r.json["missing"]}
    assert set(missing) == {urls[devs.index(data[0])], urls[devs.index(data[1])]}, missing
    assert r.json["damaged"] == [] and r.json["parity"]["redundancy"] == 0
