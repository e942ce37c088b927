"""A restore or verify around a missing device needs no scratch room for the surviving
devices' bytes (review8, session 8).

The shared spool (devices/shared.py) keeps in ``$TMPDIR`` the blocks one reader of a
surviving device over a link (here SFTP hosts: a real sshd) has read and the other not
yet. The device's own reader reads far
ahead of the stand-in (it reads one device, the stand-in every survivor, and decodes),
so without a bound the spool grew to the survivors' whole volumes (19.8 MB of scratch
for a 30 MB set over 3 data devices). Where ``$TMPDIR`` is small (a tmpfs: memory), the
spool's writes failed, the stand-in counted the survivors' units as lost, and every
file of the missing device was reported damaged ("device unavailable") by a restore
that needed no scratch at all before. Here ``$TMPDIR`` is a real 2 MiB tmpfs, far
smaller than a surviving device's 10 MB of volumes."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from fsfixtures import tmpfs_fixture  # noqa: F401 (fixture)
from parbackup.devices.registry import open_device
from parbackup.redundancy.layout import Column
from parbackup.redundancy.stripe import CopyWriter

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _parity_set(tmp_path: Path, device_dirs, sshd):
    src = make_tree(tmp_path / "src", seed=11, files=24, big=(9_000_000, 7_000_001, 8_000_003))
    devs = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", sshd.url(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 0, r.out + r.err
    return src, devs, cat


def test_a_restore_around_a_missing_device_with_little_scratch_room(
    tmp_path, device_dirs, tmpfs, sshd
):
    src, devs, cat = _parity_set(tmp_path, device_dirs, sshd)
    scratch = tmpfs("scratch", "2m")
    shutil.rmtree(devs[1])  # a data device is lost
    out = tmp_path / "out"
    env = {"TMPDIR": str(scratch)}
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json", env=env)
    assert r.code == 3 and r.json["status"] == "ok", r.out + r.err
    assert r.json["damaged"] == []
    assert snapshot(restored_root(out, src)) == snapshot(src)
    assert list(scratch.iterdir()) == []  # the scratch directory went with the restore


def test_a_verify_around_a_missing_device_with_little_scratch_room(
    tmp_path, device_dirs, tmpfs, sshd
):
    _src, devs, cat = _parity_set(tmp_path, device_dirs, sshd)
    scratch = tmpfs("scratch", "2m")
    shutil.rmtree(devs[2])
    r = run_cli("verify", "--catalog", cat, "--json", env={"TMPDIR": str(scratch)})
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "recoverable", r.out + r.err


def test_a_restore_around_a_missing_device_beside_a_tape_with_room_for_one_column(
    tmp_path, device_dirs, tmpfs
):
    """With a surviving tape the missing column is rebuilt whole into ``$TMPDIR`` first
    (the tape cannot be read at random). The tape's own column is copied there too as
    the rebuild reads it (it is then read once), but only where there is room for it:
    with room for the missing column alone, copying it too failed the rebuild, and every
    file of the missing device was named damaged ("device unavailable")."""
    src = make_tree(tmp_path / "src", seed=13, files=24, big=(7_000_000, 6_000_001, 5_000_003))
    devs = device_dirs(3)
    tape = tmp_path / "tape.img"
    urls = [f"file://{devs[0]}", f"tape://{tape}", f"file://{devs[1]}", f"file://{devs[2]}"]
    cat = str(tmp_path / "cat.sqlite")
    args = [a for u in urls for a in ("--device", u)]
    r = run_cli("backup", str(src), *args, "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 0, r.out + r.err
    column = sum(p.stat().st_size for p in devs[0].rglob("*.pbv"))
    assert 5 << 20 < column < 9 << 20
    scratch = tmpfs("scratch", "11m")  # the missing column fits; it and the tape's do not
    shutil.rmtree(devs[0])
    out = tmp_path / "out"
    env = {"TMPDIR": str(scratch)}
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json", env=env)
    assert r.code == 3 and r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    assert list(scratch.iterdir()) == []


def test_a_column_copy_that_runs_out_of_room_gives_it_back(tmp_path, tmpfs):
    """``CopyWriter`` (redundancy/stripe.py) on a real tmpfs that fills up: the copy
    stops without raising, is not whole, and leaves none of its volumes behind."""
    room = tmpfs("room", "1m")
    dev = open_device(f"file://{room}")
    dev.open()
    column = Column("c0", (("sets/x/c0-0001.pbv", 600_000), ("sets/x/c0-0002.pbv", 900_000)))
    copy = CopyWriter(dev, column)
    data = random.Random(3).randbytes(column.length)
    for at in range(0, len(data), 1 << 16):
        copy.write(data[at : at + (1 << 16)])  # never raises
    assert not copy.finished()
    assert [o.name for o in dev.list("sets/")] == []
    dev.close()
