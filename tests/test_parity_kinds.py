"""Parity over every device kind, with real losses (REQUIREMENTS K1, D1, R1-R4): an SFTP
host killed during a ``--parity`` backup (its work fails over, the set keeps its
parity), then a tape image truncated after it; S3 and tape as parity devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from fsfixtures import Gate
from servers import SSHD, SshServer

pytestmark = pytest.mark.slow


def dev_args(urls: list[str]) -> list[str]:
    return [a for u in urls for a in ("--device", u)]


@pytest.fixture
def own_sshd(tmp_path):
    """An sshd of this test's own, so killing it touches no other test."""
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH sshd")
    with SshServer(tmp_path / "ssh") as server:
        yield server


def test_sftp_host_killed_mid_backup_then_tape_truncated(tmp_path, own_sshd, s3_server):
    """Data on a directory, an SFTP host, S3 and a tape image; parity on a directory.
    The SFTP host dies mid-backup: its work goes to the others, the set completes
    degraded with its one parity over the three surviving columns. Then the tape image
    is cut in half: verify says recoverable, naming the tape; restore gives every byte."""
    src = make_tree(tmp_path / "src", seed=5, files=30, big=(3_000_000, 2_200_000))
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    (tmp_path / "parity").mkdir()
    gate = Gate(tmp_path / "gate")
    sftp = own_sshd.url(tmp_path / "remote", f"pause_after=300K&gate={gate}&retries=1")
    tape = tmp_path / "tape.img"
    urls = [
        f"file://{tmp_path / 'local'}",
        "faulty+" + sftp,
        s3_server.url(s3_server.bucket("parity-kinds"), "data"),
        f"tape://{tape}",
        f"file://{tmp_path / 'parity'}",
    ]
    cat = str(tmp_path / "cat.sqlite")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parbackup",
            "backup",
            str(src),
            *dev_args(urls),
            "--catalog",
            cat,
            "--parity",
            "1",
            "--device-timeout",
            "20",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    try:
        gate.wait_paused()
        own_sshd.kill()
        gate.open()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(out)
    assert proc.returncode == 3, err
    assert doc["status"] == "degraded"
    failed = [d for d in doc["devices"] if d["status"] == "failed"]
    assert len(failed) == 1 and str(tmp_path / "remote") in failed[0]["url"], failed
    assert doc["parity"]["redundancy"] == 1 and doc["parity"]["k"] == 3, doc["parity"]
    assert doc["parity"]["written"] == "after the data", doc["parity"]  # over the survivors
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err

    with open(tape, "r+b") as fh:
        fh.truncate(tape.stat().st_size // 2)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "recoverable", r.out + r.err
    assert [d["url"] for d in r.json["missing"]] == [f"tape://{tape}"]
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(target, src)) == snapshot(src)


@pytest.mark.parametrize("kind", ["s3", "tape", "sftp"])
def test_parity_device_of_every_kind_rebuilds_a_lost_data_device(tmp_path, kind, s3_server, sshd):
    """Parity written on an S3 prefix, a tape image or an SFTP host reads back: a data
    directory deleted after the backup is rebuilt by repair onto a new directory."""
    src = make_tree(tmp_path / "src", seed=6, files=20, big=(2_100_000,))
    data = [tmp_path / f"d{i}" for i in range(2)]
    for d in data:
        d.mkdir()
    if kind == "s3":
        parity = s3_server.url(s3_server.bucket("parity-dev"), f"p-{tmp_path.name}")
    elif kind == "tape":
        parity = f"tape://{tmp_path / 'parity.img'}"
    else:
        (tmp_path / "sp").mkdir()
        parity = sshd.url(tmp_path / "sp")
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup",
        str(src),
        *dev_args([str(d) for d in data] + [parity]),
        "--catalog",
        cat,
        "--parity",
        "1",
        "--json",
    )
    assert r.code == 0, r.out + r.err
    set_id = r.json["set"]
    assert r.json["parity"]["redundancy"] == 1
    assert r.json["parity"]["written"] == "while writing", r.json["parity"]
    before = {p.relative_to(data[0]): p.read_bytes() for p in data[0].rglob("*.pbv")}
    for p in data[0].rglob("*"):
        if p.is_file():
            p.unlink()
    new = tmp_path / "new"
    new.mkdir()
    r = run_cli("repair", "--set", set_id, "--device", str(new), "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    assert {p.relative_to(new): p.read_bytes() for p in new.rglob("*.pbv")} == before
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(target, src)) == snapshot(src)


@pytest.mark.parametrize("kind", ["tape", "s3"])
def test_repair_onto_a_tape_or_s3_replacement(tmp_path, kind, s3_server):
    """The replacement device may be of any kind: a tape image is written front to back
    (volumes in order), an S3 prefix by multipart objects; restore then reads it."""
    src = make_tree(tmp_path / "src", seed=7, files=20, big=(2_300_000,))
    devs = [tmp_path / f"d{i}" for i in range(3)]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup",
        str(src),
        *dev_args([str(d) for d in devs]),
        "--catalog",
        cat,
        "--parity",
        "1",
        "--json",
    )
    assert r.code == 0, r.out + r.err
    set_id = r.json["set"]
    for p in devs[1].rglob("*.pbv"):
        p.unlink()
    if kind == "tape":
        new = f"tape://{tmp_path / 'new.img'}"
    else:
        new = s3_server.url(s3_server.bucket("parity-repair"), f"r-{tmp_path.name}")
    r = run_cli("repair", "--set", set_id, "--device", new, "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(target, src)) == snapshot(src)
