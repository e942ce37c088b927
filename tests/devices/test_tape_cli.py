"""Backing up onto a tape (a FIFO) beside a directory, restoring from the captured image."""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from servers import FifoCapture, feed_fifo


@pytest.mark.slow
def test_backup_to_fifo_restore_from_image_and_pipe(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=3, files=30, big=(3_000_000,))
    (disk,) = device_dirs(1)
    cap = FifoCapture(tmp_path / "tape")
    cat = str(tmp_path / "cat.sqlite")

    r = run_cli("plan", str(tree), "-d", str(disk), "-d", cap.url + "?wait=0.5", "--json")
    assert r.code == 0, r.err  # a dry run never opens the pipe
    assert r.json["devices"][1]["bytes"] > 0

    r = run_cli("backup", str(tree), "-d", str(disk), "-d", cap.url, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert [d["status"] for d in r.json["devices"]] == ["ok", "ok"]
    assert all(d["bytes"] > 0 for d in r.json["devices"])
    image = cap.wait()

    moved = f"tape://{image}"
    r = run_cli("verify", "--catalog", cat, "--device", moved, "--json")
    assert r.code == 0, r.out + r.err

    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--device", moved)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)

    # the same tape fed through a pipe: restore reads it front to back in one pass
    pipe = feed_fifo(tmp_path, image)
    out2 = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out2), "--catalog", cat, "--device", f"tape://{pipe}")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out2, tree)) == snapshot(tree)


def test_restore_without_the_tape_names_it(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=4, files=10)
    (disk,) = device_dirs(1)
    image = tmp_path / "tape.img"
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(disk), "-d", f"tape://{image}", "--catalog", cat)
    assert r.code == 0, r.err
    image.rename(tmp_path / "elsewhere.img")
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat, "--json")
    assert r.code == 1
    assert any("tape://" in d["device"] for d in r.json["damaged"])


@pytest.mark.slow
def test_incremental_never_reuses_a_rewritten_tape(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=6, files=25, big=(2_000_000,))
    (disk,) = device_dirs(1)
    image = tmp_path / "tape.img"
    cat = str(tmp_path / "cat.sqlite")
    devs = ["-d", str(disk), "-d", f"tape://{image}"]
    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    # the same tape again: it is started anew, so nothing on it may be reused
    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--incremental", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["devices"][1]["bytes"] > 0
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
