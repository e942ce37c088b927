"""A volume deleted from its device while a backup writes it (hostile2).

The writer keeps its open file, so every write and fsync still succeeds, into a file
no name leads to: the backup called the set ``complete`` (exit 0) and only a later
verify found the bytes gone. Now the writer checks at each checkpoint and at commit
that its file is still the one at its name: the device fails, its work goes to the
other device, the set is ``degraded`` (exit 3) and verifies and restores whole.
The ``faulty+`` wrapper only pauses the device at a known point; the deletion is real,
on a local directory and on a real sshd's disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused


@pytest.mark.parametrize("kind", ["file", "sftp"])
def test_a_volume_deleted_mid_write_fails_its_device(kind, tmp_path, device_dirs, request):
    tree = make_tree(tmp_path / "src", seed=11, files=20, big=(3 << 20,))
    devs = device_dirs(2)
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    query = f"pause_after=1M&gate={gate}"
    if kind == "sftp":
        url = "faulty+" + request.getfixturevalue("sshd").url(devs[0], query)
    else:
        url = f"faulty+file://{devs[0]}?{query}"
    cat = str(tmp_path / "cat.sqlite")
    cmd = [sys.executable, "-m", "parbackup", "backup", str(tree), "-d", url, "-d", str(devs[1])]
    cmd += ["--catalog", cat, "--json"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_paused(proc, fifo)
        volumes = list(devs[0].glob("sets/*/*.pbv"))
        assert volumes, "the paused device has a volume open"
        for volume in volumes:
            volume.unlink()
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=200)
    doc = json.loads(out)
    assert proc.returncode == 3, (doc, err)
    assert doc["status"] == "degraded", doc
    first = doc["devices"][0]
    assert first["status"] == "failed", doc
    assert "was deleted or replaced while it was written" in first["error"], first
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    target = tmp_path / "r"
    r = run_cli("restore", "--catalog", cat, "--target", str(target))
    assert r.code == 0, r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)
