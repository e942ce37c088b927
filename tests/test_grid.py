"""The hostile grid: damage and faults on every device kind, through the real commands.

tests/test_damage.py tries every kind of damage on directory devices; this grid tries
the three a hostile user makes most (a byte flipped inside a volume, a volume cut short,
a volume swapped for another device's) on each kind of device: a directory, a tape image,
an SFTP host (real sshd) and an S3 bucket (moto's server). Each time ``verify`` must name
the damage (exit 1) and ``restore`` must name the damaged files, restore every other
file byte for byte, and exit 1; once the volume is put back both are clean again (exit 0).

Besides: a tape image on a mount turned read-only still verifies, restores and rebuilds
the catalog, and a tape
whose reader is stopped (SIGSTOP on the process draining the FIFO) for longer than the
device timeout is given up and the backup completes degraded on the others.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli
from fsfixtures import sh, tmpfs_fixture  # noqa: F401 (fixture)
from servers import SshServer

pytestmark = pytest.mark.slow


@dataclass
class Volume:
    """One volume of the device under test: read and replace its bytes."""

    name: str
    get: Callable[[], bytes]
    put: Callable[[bytes], None]


def file_volume(path: Path) -> Volume:
    return Volume(str(path), path.read_bytes, path.write_bytes)


def s3_volume(client, bucket: str, key: str) -> Volume:
    def get() -> bytes:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put(data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=data)

    return Volume(key, get, put)


@pytest.fixture
def setup(tmp_path, request):
    """(device URL under test, a function giving its volume once written, its image
    directory or None) for the parametrized kind."""
    kind = request.param
    if kind == "dir":
        d = tmp_path / "kind"
        d.mkdir()
        return str(d), lambda: file_volume(next(d.glob("sets/*/*.pbv")))
    if kind == "tape":
        image = tmp_path / "tape.img"
        return f"tape://{image}", lambda: file_volume(image)
    if kind == "sftp":
        server = request.getfixturevalue("sshd")
        d = tmp_path / "remote"
        d.mkdir()
        return server.url(d), lambda: file_volume(next(d.glob("sets/*/*.pbv")))
    server = request.getfixturevalue("s3_server")
    bucket = server.bucket("grid-damage")
    prefix = tmp_path.name.replace("_", "-")[-40:]
    client = server.client()

    def volume() -> Volume:
        keys = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/sets/")["Contents"]
        return s3_volume(client, bucket, keys[0]["Key"])

    return server.url(bucket, prefix), volume


def damage(how: str, original: bytes, other: bytes) -> bytes:
    if how == "flipped":
        at = len(original) * 2 // 3
        return original[:at] + bytes([original[at] ^ 0x40]) + original[at + 1 :]
    if how == "truncated":
        return original[: len(original) // 2]
    return other  # swapped: another device's volume under this one's name


def files_of(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*.bin")}


@pytest.mark.parametrize("setup", ["dir", "tape", "sftp", "s3"], indirect=True)
def test_damaged_volume_on_every_kind(tmp_path, setup):
    url, volume_of = setup
    tree = make_tree(tmp_path / "src", seed=61, files=16, big=(1_500_000,))
    other = tmp_path / "other"
    other.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", url, "-d", str(other), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert all(d["bytes"] > 0 for d in r.json["devices"])
    vol = volume_of()
    original = vol.get()
    foreign = next(other.glob("sets/*/*.pbv")).read_bytes()
    want = files_of(tree)

    for n, how in enumerate(["flipped", "truncated", "swapped"]):
        vol.put(damage(how, original, foreign))
        r = run_cli("verify", "--catalog", cat, "--json")
        assert r.code == 1, f"{how}: {r.out}{r.err}"
        assert json.loads(r.out)["damaged"], f"{how}: {r.out}"
        out = tmp_path / f"out{n}"
        r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
        assert r.code == 1 and "Traceback" not in r.err, f"{how}: {r.out}{r.err}"
        named = {d["path"] for d in json.loads(r.out)["damaged"]}
        assert named, how
        back = restored_root(out, tree)
        for rel, data in want.items():
            if str(tree / rel) in named:
                assert not (back / rel).exists(), f"{how}: {rel} handed back though damaged"
            else:
                assert (back / rel).read_bytes() == data, f"{how}: {rel}"
        assert not list(out.rglob("*.part*")), how
        vol.put(original)

    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err


def test_tape_image_on_a_read_only_mount(tmp_path, tmpfs):
    tree = make_tree(tmp_path / "src", seed=62, files=12, big=(1_000_000,))
    media = tmpfs("media", "16m")
    other = tmp_path / "other"
    other.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    tape = f"tape://{media / 'tape.img'}"
    r = run_cli("backup", str(tree), "-d", tape, "-d", str(other), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    sh("mount", "-o", "remount,ro", str(media))
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert files_of(restored_root(out, tree)) == files_of(tree)
    rebuilt = str(tmp_path / "rebuilt.sqlite")  # the catalog again, from the media alone
    r = run_cli("rebuild-catalog", "-d", tape, "-d", str(other), "--catalog", rebuilt)
    assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--catalog", rebuilt)
    assert r.code == 0, r.out + r.err


def test_tape_whose_reader_is_stopped_is_given_up(tmp_path):
    tree = make_tree(tmp_path / "src", seed=63, files=10, big=(6_000_000,))
    disk = tmp_path / "disk"
    disk.mkdir()
    fifo, image = tmp_path / "tape.fifo", tmp_path / "tape.img"
    os.mkfifo(fifo)
    with open(image, "wb") as sink:
        drain = subprocess.Popen(["cat", str(fifo)], stdout=sink)
    os.kill(drain.pid, signal.SIGSTOP)  # it will open the FIFO, then read nothing
    cat = str(tmp_path / "cat.sqlite")
    try:
        r = run_cli(
            "backup",
            str(tree),
            "-d",
            str(disk),
            "-d",
            f"tape://{fifo}",
            "--catalog",
            cat,
            "--device-timeout",
            "3",
            "--json",
        )
    finally:
        os.kill(drain.pid, signal.SIGKILL)
        drain.wait()
    assert r.code == 3, r.out + r.err
    doc = r.json
    assert doc["status"] == "degraded"
    assert [d["status"] for d in doc["devices"]] == ["ok", "failed"]
    assert "no progress for 3 seconds" in doc["devices"][1]["error"]
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err


def test_sftp_host_serving_read_only(tmp_path, sshd):
    """An SFTP server that only reads (``internal-sftp -R``): verify, restore and
    rebuild-catalog work through it; a backup fails that device over with one line
    naming it (permission denied) and completes on the other."""
    tree = make_tree(tmp_path / "src", seed=64, files=16, big=(1_000_000,))
    remote, disk = tmp_path / "remote", tmp_path / "disk"
    remote.mkdir()
    disk.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", sshd.url(remote), "-d", str(disk), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    ro = SshServer(tmp_path / "ssh-ro")
    ro.config.write_text(ro.config.read_text().replace("internal-sftp", "internal-sftp -R"))
    with ro:
        url = ro.url(remote)
        r = run_cli("verify", "--catalog", cat, "--device", url)
        assert r.code == 0, r.out + r.err
        out = tmp_path / "out"
        r = run_cli("restore", "--target", str(out), "--catalog", cat, "--device", url)
        assert r.code == 0, r.out + r.err
        assert files_of(restored_root(out, tree)) == files_of(tree)
        rebuilt = str(tmp_path / "rebuilt.sqlite")
        r = run_cli("rebuild-catalog", "-d", url, "-d", str(disk), "--catalog", rebuilt)
        assert r.code == 0, r.out + r.err
        r = run_cli("backup", str(tree), "-d", url, "-d", str(disk), "--catalog", cat, "--json")
        assert r.code == 3, r.out + r.err
        assert [d["status"] for d in r.json["devices"]] == ["failed", "ok"]
        assert "permission denied" in r.json["devices"][0]["error"]
        assert "Traceback" not in r.err
