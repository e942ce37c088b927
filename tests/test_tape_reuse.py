"""A tape reused for a new backup: the sets it held stop being called restorable.

A backup starts a tape anew (it never appends), so writing a new backup onto a tape image
destroys every set on it. The catalog used to go on listing those sets as complete, and
only a verify or restore found out. Now the tape reads the label of the image it is about
to write over, and the catalog marks every restorable set with a record on it forgotten
(named in a notice); the next prune reclaims what they left on the other devices. An
image moved away before the next backup was not written over: its sets stay restorable.
"""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot

pytestmark = pytest.mark.slow


def statuses(cat: str) -> dict[str, str]:
    r = run_cli("sets", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    return {s["set"]: s["status"] for s in r.json["sets"]}


def backup(tree, disk, tape, cat) -> tuple[str, str]:
    r = run_cli(
        "backup", str(tree), "-d", str(disk), "-d", f"tape://{tape}", "--catalog", cat, "--json"
    )
    assert r.code == 0, r.out + r.err
    return r.json["set"], r.err


def test_a_reused_tape_image_forgets_the_sets_it_held(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=41, files=12, big=(2_000_000,))
    (disk,) = device_dirs(1)
    tape, cat = tmp_path / "tape.img", str(tmp_path / "cat.sqlite")

    first, _ = backup(tree, disk, tape, cat)
    second, err = backup(tree, disk, tape, cat)  # the same image, written over
    assert "this tape held 1 restorable set(s)" in err and first in err
    # forgotten, then (nothing else holds any of it) dropped by the run's own clean-up
    assert statuses(cat) == {second: "complete"}
    r = run_cli("restore", "--target", str(tmp_path / "o1"), "--catalog", cat, "--set", first)
    assert r.code == 1 and first in r.err, r.out + r.err
    assert not (disk / "sets" / first).exists()  # the backup's clean-up took them
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")  # the old label is gone
    assert r.code == 0 and r.json["unreachable"] == {}, r.out + r.err

    # an image moved away first is not written over: its set stays restorable
    archive = tmp_path / "monday.img"
    tape.rename(archive)
    third, err = backup(tree, disk, tape, cat)
    assert "this tape held" not in err
    assert statuses(cat) == {second: "complete", third: "complete"}
    out = tmp_path / "out"
    r = run_cli(
        "restore",
        "--target",
        str(out),
        "--catalog",
        cat,
        "--set",
        second,
        "--device",
        f"tape://{archive}",
    )
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
