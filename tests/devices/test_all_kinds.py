"""One backup onto a directory, a tape (FIFO), an SFTP host and an S3 bucket at once."""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from servers import FifoCapture


@pytest.mark.slow
def test_four_kinds_at_once(tmp_path, sshd, s3_server, device_dirs):
    tree = make_tree(tmp_path / "src", seed=21, files=40, big=(6_000_000, 2_000_000))
    (disk,) = device_dirs(1)
    tape = FifoCapture(tmp_path / "tape")
    (tmp_path / "remote").mkdir()
    sftp = sshd.url(tmp_path / "remote")
    s3 = s3_server.url(s3_server.bucket("all-kinds"), "dev")
    cat = str(tmp_path / "cat.sqlite")
    devices = [str(disk), tape.url, sftp, s3]

    args = [a for d in devices for a in ("-d", d)]
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    report = r.json
    assert report["status"] == "complete"
    assert [d["status"] for d in report["devices"]] == ["ok"] * 4
    shares = [d["bytes"] for d in report["devices"]]
    assert min(shares) > 0 and sum(shares) == report["bytes"]
    image = tape.wait()

    moved = f"tape://{image}"
    r = run_cli("verify", "--catalog", cat, "--device", moved, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--device", moved, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
