"""Streams on standard input (F2): unknown length, segments spread as they arrive."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time

import pytest
from blake3 import blake3

from conftest import SRC, run_cli
from parbackup import Catalog, restore_to_stream, run_stream_backup

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

MiB = 1 << 20


def devices_args(devs) -> list[str]:
    return [a for d in devs for a in ("--device", str(d))]


def test_small_stream_roundtrip(tmp_path, device_dirs):
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    data = os.urandom(20 * MiB + 12345)
    r = run_cli(
        "backup", "-", "--stdin-name", "dumps/db.sql", *devices_args(devs), "--catalog", cat,
        "--json", input=data,
    )  # fmt: skip
    assert r.code == 0, r.err + r.out
    doc = r.json
    assert doc["status"] == "complete" and doc["bytes"] == len(data) and doc["files"] == 1
    # 8 MiB segments to the least-filled device: 8 + 8 + the rest
    assert sorted(d["bytes"] for d in doc["devices"]) == [len(data) - 16 * MiB, 8 * MiB, 8 * MiB]
    r = run_cli("files", "--catalog", cat, "--json")
    assert [(f["path"], f["size"]) for f in r.json["files"]] == [("/dumps/db.sql", len(data))]
    r = run_cli("restore", "--stdout", "dumps/db.sql", "--catalog", cat)
    assert r.code == 0
    out = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--stdout", "/dumps/db.sql",
         "--catalog", cat],
        capture_output=True, env={**os.environ, "PYTHONPATH": SRC}, check=True,
    ).stdout  # fmt: skip
    assert out == data
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "dumps" / "db.sql").read_bytes() == data
    assert run_cli("verify", "--catalog", cat).code == 0


def test_empty_stream(tmp_path, device_dirs):
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", "-", *devices_args(device_dirs(2)), "--catalog", cat, input=b"")
    assert r.code == 0, r.err
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0 and (tmp_path / "out" / "stdin").read_bytes() == b""


def test_stdin_must_be_alone(tmp_path, device_dirs, tree):
    r = run_cli("backup", "-", str(tree), *devices_args(device_dirs(2)), input=b"x")
    assert r.code == 2 and "only source" in r.err


def test_stream_survives_a_failing_device(tmp_path, device_dirs):
    """A device that breaks mid-stream: its segments not yet durable go to the others."""
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    data = os.urandom(60 * MiB)
    urls = [str(devs[0]), f"faulty+file://{devs[1]}?fail_after=12M", str(devs[2])]
    args = [a for u in urls for a in ("--device", u)]
    r = run_cli("backup", "-", "--stdin-name", "x", *args, "--catalog", cat, "--json", input=data)
    assert r.code == 3, r.err + r.out
    doc = r.json
    assert doc["status"] == "degraded" and doc["bytes"] == len(data)
    failed = [d for d in doc["devices"] if d["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["redirected"]
    out = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--stdout", "x", "--catalog", cat],
        capture_output=True, env={**os.environ, "PYTHONPATH": SRC}, check=True,
    ).stdout  # fmt: skip
    assert out == data


@pytest.mark.slow
def test_large_stream_is_not_held_in_memory(tmp_path, device_dirs):
    """512 MiB piped in; the process stays far below that, and the bytes come back."""
    size, block = 512 * MiB, MiB
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "parbackup", "backup", "-", "--stdin-name", "big.dump"]
    proc = subprocess.Popen(
        [*cmd, *devices_args(devs), "--catalog", cat, "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    rng = random.Random(42)
    sent = blake3()
    assert proc.stdin is not None
    for _ in range(size // block):
        chunk = rng.randbytes(block)
        sent.update(chunk)
        proc.stdin.write(chunk)
    with open(f"/proc/{proc.pid}/status") as fh:
        peak_kib = int(next(line.split()[1] for line in fh if line.startswith("VmHWM:")))
    proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    doc, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=600) == 0, err
    assert b'"bytes": 536870912' in doc
    assert peak_kib * 1024 < 200 * MiB, f"peak RSS {peak_kib} KiB for a {size} byte stream"
    got = blake3()
    restore = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "restore", "--stdout", "big.dump", "--catalog", cat],
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert restore.stdout is not None
    n = 0
    while data := restore.stdout.read(block):
        got.update(data)
        n += len(data)
    assert restore.wait() == 0
    assert n == size and got.digest() == sent.digest()


def test_stream_through_the_library(tmp_path, device_dirs):
    data = os.urandom(3 * MiB + 7)
    devs = [str(d) for d in device_dirs(2)]
    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_stream_backup(io.BytesIO(data), "dump.bin", devs, cat, segment=MiB)
        assert report.status == "complete" and report.bytes == len(data)
        assert sorted(d.segments for d in report.devices) == [2, 2]
        out = io.BytesIO()
        assert restore_to_stream(cat, None, "/dump.bin", out).exit_code == 0
        assert out.getvalue() == data


def test_a_pause_in_the_stream_longer_than_the_device_timeout_fails_no_device(
    tmp_path, device_dirs
):
    """A producer that stops for longer than ``--device-timeout`` (``pg_dump`` waiting on
    a lock) is no device's hang: the timeout counts only while a device has work. The
    devices given the stream's next segments after the pause were failed for their
    silence before it ("no progress for 1 seconds"), while they had had nothing to do.

    The pause is the fault under test (the input stalls, three times the timeout), not a
    wait for the backup: the first segment is whole on its device, or not, either way."""
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    data = os.urandom(24 * MiB)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", "-", "--stdin-name", "s",
         *devices_args(devs), "--device-timeout", "1", "--catalog", cat, "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(data[: 8 * MiB])
    proc.stdin.flush()
    time.sleep(3)  # the producer's stall: three device timeouts
    out, err = proc.communicate(data[8 * MiB :], timeout=120)
    doc = json.loads(out)
    assert proc.returncode == 0, err.decode() + out.decode()
    assert doc["status"] == "complete"
    assert [d["status"] for d in doc["devices"]] == ["ok", "ok"], doc["devices"]
    back = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--stdout", "s", "--catalog", cat],
        capture_output=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120,
    )  # fmt: skip
    assert back.returncode == 0 and back.stdout == data
