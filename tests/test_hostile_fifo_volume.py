"""A FIFO planted on a directory device where a volume or the label lies (hostile,
session 21).

``open`` of a FIFO waits for a writer for ever: a volume swapped for one made ``verify``
and ``restore`` hang (five minutes, then killed by hand, SIGTERM deferred while the
reader waited), and so did a ``label.json`` or the catalog's key file swapped for one.
The directory device (and the key file's loader) now opens only regular files for their
content (fileio.py ``open_regular``): the volume is named damaged ("not a regular
file", exit 1), every other file restores, and the device reads again once the volume
is back. ``subprocess.run`` kills a run that outlives its timeout, so a hang fails the
test.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_tree, restored_root, run_cli, snapshot


def test_a_volume_swapped_for_a_fifo_is_damaged_not_waited_on(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=31, files=8, max_size=40_000, big=(600_000,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    volumes = sorted((devs[0] / "sets").rglob("*.pbv"))
    assert volumes
    for v in volumes:
        v.rename(f"{v}.away")
        os.mkfifo(v)
    r = run_cli("verify", "--catalog", cat, timeout=60)
    assert r.code == 1, r.out + r.err
    assert f"DAMAGED: volume {volumes[0].relative_to(devs[0])}" in r.out + r.err
    assert "not a regular file" in r.out + r.err
    target = tmp_path / "back"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json", timeout=60)
    assert r.code == 1, r.out + r.err
    damaged = {d["path"] for d in r.json["damaged"]}
    assert damaged and all("not a regular file" in d["error"] for d in r.json["damaged"])
    back, whole = snapshot(restored_root(target, src)), snapshot(src)
    assert {k: v for k, v in whole.items() if str(src / k) not in damaged} == {
        k: v for k, v in back.items() if k in whole and str(src / k) not in damaged
    }
    for v in volumes:
        v.unlink()
        Path(f"{v}.away").rename(v)
    assert run_cli("verify", "--catalog", cat).code == 0


def test_a_label_swapped_for_a_fifo_is_named_not_waited_on(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=32, files=8, max_size=40_000, big=(600_000,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    label = devs[1] / "label.json"
    label.rename(tmp_path / "label.away")
    os.mkfifo(label)
    for args in (("verify",), ("restore", "--target", str(tmp_path / "back"))):
        r = run_cli(*args, "--catalog", cat, timeout=60)
        assert r.code == 1, r.out + r.err
        said = f"device unavailable: {devs[1]}: read label.json: not a regular file"
        assert said in r.out + r.err, r.out + r.err
    label.unlink()
    (tmp_path / "label.away").rename(label)
    assert run_cli("verify", "--catalog", cat).code == 0


def test_a_key_file_swapped_for_a_fifo_is_named_not_waited_on(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=33, files=6, max_size=20_000)
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    cat = tmp_path / "cat.sqlite"
    pw = {"PARBACKUP_PASSWORD": "correct horse battery"}
    r = run_cli("backup", str(src), *devs, "--catalog", str(cat), "--encrypt", env=pw)
    assert r.code == 0, r.err
    key = Path(f"{cat}.key")
    key.rename(tmp_path / "key.away")
    os.mkfifo(key)
    for args in (
        ("verify",),
        ("restore", "--target", str(tmp_path / "back")),
        ("backup", str(src), *devs),
    ):
        r = run_cli(*args, "--catalog", str(cat), env=pw, timeout=60)
        assert r.code == 1, r.out + r.err
        assert f"error: {key}: not a regular file" in r.err, r.err
    key.unlink()
    (tmp_path / "key.away").rename(key)
    assert run_cli("verify", "--catalog", str(cat), env=pw).code == 0
