"""One medium under two names, and device URLs as the catalog records them (session-13
hostile round).

A tape image named twice (through a symlink, or with a doubled slash) was written by two
movers at once: the backup said `complete` (exit 0) and a file came back damaged. A
fresh directory named as a data device and again, through a symlink, as the parity
device got two labels: the set "survived losing any 1 device" and lost a file with the
first device. Both are now refused before anything is written (devices/medium.py).

A parity device's URL and a repair's replacement were recorded as typed: a relative path
stayed relative (so from another directory the device was "missing" and the set one
loss from damage), and a password in the URL went into the catalog and into the catalog
copy on every device. They are now recorded like the data devices: absolute, redacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

SECRET = "pw-SECRET-13"


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """parbackup run from ``cwd`` (relative device paths are read against it)."""
    return subprocess.run(
        [sys.executable, "-m", "parbackup", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=300,
    )


@pytest.mark.parametrize("spelling", ["symlink", "double-slash"])
def test_a_tape_named_twice_is_refused_before_it_is_written(tmp_path, spelling):
    tree = make_tree(tmp_path / "src", seed=13, files=6)
    tape = tmp_path / "t.img"
    other = tmp_path / "link.img"
    if spelling == "symlink":
        tape.write_bytes(b"")
        other.symlink_to(tape.name)
        second = f"tape://{other}"
    else:  # not made yet: its parent and name say it is the same
        second = f"tape://{tmp_path}//{tape.name}"
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", f"tape://{tape}", "-d", second, "--catalog", cat)
    assert r.code == 2, (r.out, r.err)
    assert "the same device is named twice" in r.err
    assert not tape.exists() or tape.stat().st_size == 0  # nothing written to it
    assert run_cli("verify", "--catalog", cat).code == 1  # no set to verify


def test_a_parity_device_that_is_a_data_device_under_another_name_is_refused(tmp_path):
    tree = make_tree(tmp_path / "src", seed=14, files=6)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (tmp_path / "d1link").symlink_to("d1")
    cat = str(tmp_path / "cat.sqlite")
    devs = ["-d", str(d1), "-d", str(d2), "-d", str(tmp_path / "d1link")]
    r = run_cli("backup", str(tree), "--parity", "1", *devs, "--catalog", cat)
    assert r.code == 2, (r.out, r.err)
    assert "the same device is named twice" in r.err
    assert list(d1.iterdir()) == [] and list(d2.iterdir()) == []  # not even a label
    r = run_cli("plan", str(tree), "--parity", "1", *devs, "--catalog", cat)
    assert r.code == 2 and "the same device is named twice" in r.err  # as the backup


def test_parity_and_repair_urls_are_recorded_absolute_and_without_secrets(tmp_path):
    pytest.importorskip("parbackup.redundancy.isal")
    work = tmp_path / "work"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_tree(work / "src", seed=15, files=10)
    for name in ("a", "b", "c", "d", "rep", "rep2"):
        (work / name).mkdir()
    cat = str(tmp_path / "cat.sqlite")
    secret_d = f"file://user:{SECRET}@{work / 'd'}"
    devs = ["-d", "a", "-d", "b", "-d", "c", "-d", secret_d]  # parity on c and d
    r = _cli(work, "backup", "src", "--parity", "2", *devs, "--catalog", cat, "--json")
    assert r.returncode == 0, r.stderr
    assert '"redundancy": 2' in r.stdout
    assert SECRET not in r.stdout + r.stderr
    # from another directory the relative parity device is still found
    r = _cli(elsewhere, "verify", "--catalog", cat)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "2 more device(s) may be lost" in r.stdout
    # lose a data device, repair it onto a relative path; then a parity device, onto
    # a URL with a password in it
    shutil.rmtree(work / "b")
    r = _cli(work, "repair", "--set", "latest", "--device", "rep", "--catalog", cat)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(work / "d")
    rep2 = f"file://user:{SECRET}@{work / 'rep2'}"
    r = _cli(work, "repair", "--set", "latest", "--device", rep2, "--catalog", cat, "--json")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    r = _cli(elsewhere, "verify", "--catalog", cat)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "2 more device(s) may be lost" in r.stdout
    files = [Path(cat), *(p for p in work.rglob("*") if p.is_file())]
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_a_source_that_is_a_device_directory_leaves_out_what_the_device_holds(tmp_path):
    """``backup /mnt/d1 -d /mnt/d1 -d /mnt/d2`` stored the volumes of the runs before
    (a device equal to the source was not "inside" it): 50, 146, 220 kB for 50 kB of
    files. The device's own names go; the user's files in that directory stay. A source
    inside what the device holds (its ``sets``) is left out whole."""
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    make_tree(d1 / "data", seed=16, files=6)
    d2.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    args = ("-d", str(d1), "-d", str(d2), "--catalog", cat, "--json")
    sizes = []
    for _ in range(3):
        r = run_cli("backup", str(d1), *args)
        assert r.code == 0, r.err
        sizes.append(r.json["bytes"])
    assert sizes[0] > 0 and sizes[1] == sizes[0] == sizes[2], sizes
    assert f"left out {d1}/sets: backup device {d1}" in r.err
    r = run_cli("files", "--catalog", cat)
    assert f"{d1}/data" in r.out
    assert not any(f"{d1}/{own}" in r.out for own in ("label.json", "sets", "catalog"))
    r = run_cli("backup", str(d1 / "sets"), *args)
    assert r.code == 0, r.err
    assert r.json["bytes"] == 0 and r.json["files"] == 0


def test_a_copy_of_a_data_device_given_as_parity_device_leaves_the_data_device_known(
    tmp_path,
):
    """A parity device that is a copy of a data device (``cp -a``, a cloned disk: same
    label) is refused by label, and the backup goes on without parity (exit 3). Before,
    the catalog recorded the copy's URL for the data device's label on the way, so
    `verify` read the copy, called the new set damaged (exit 1) and restore failed,
    while every byte was on the data device."""
    pytest.importorskip("parbackup.redundancy.isal")
    tree = make_tree(tmp_path / "src", seed=17, files=6)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    first = run_cli("backup", str(tree), "-d", str(d1), "-d", str(d2), "--catalog", cat)
    assert first.code == 0, first.err
    shutil.copytree(d1, tmp_path / "d3")
    devs = ["-d", str(d1), "-d", str(d2), "-d", str(tmp_path / "d3")]
    r = run_cli("backup", str(tree), "--parity", "1", *devs, "--catalog", cat)
    assert r.code == 3, (r.out, r.err)
    assert "a parity device is also a data device of the set" in r.err
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, (r.out, r.err)
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, (r.out, r.err)


def test_a_copy_of_a_known_device_is_not_written_while_the_original_carries_its_label(
    tmp_path,
):
    """Two media with one label (``cp -a d1 d3``, a cloned disk used in turn): a backup
    onto the copy recorded its URL for the label, and the next backup onto the original
    recorded that back, so the set written on the copy was read on the original: damaged
    (exit 1) with every byte on the copy. The copy is now a failed device (the run goes
    on over the others, exit 3), every set verifies, and a device that only moved (its
    old directory gone) is still taken."""
    tree = make_tree(tmp_path / "src", seed=18, files=6)
    d1, d2, d3 = tmp_path / "d1", tmp_path / "d2", tmp_path / "d3"
    d1.mkdir()
    d2.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    assert run_cli("backup", str(tree), "-d", str(d1), "-d", str(d2), "--catalog", cat).code == 0
    shutil.copytree(d1, d3)
    (tree / "more.bin").write_bytes(b"more" * 5000)
    r = run_cli("backup", str(tree), "-d", str(d3), "-d", str(d2), "--catalog", cat)
    assert r.code == 3, (r.out, r.err)
    assert f"{d3}: carries the label" in r.err and "a copy of the other" in r.err
    r = run_cli("backup", str(tree), "-d", str(d1), "-d", str(d2), "--catalog", cat)
    assert r.code == 0, (r.out, r.err)
    sets = run_cli("sets", "--catalog", cat, "--json").json["sets"]
    assert len(sets) == 3
    for s in sets:
        r = run_cli("verify", "--set", s["set"], "--catalog", cat)
        assert r.code == 0, (s, r.out, r.err)
    d1.rename(tmp_path / "moved")
    r = run_cli("backup", str(tree), "-d", str(tmp_path / "moved"), "-d", str(d2), "--catalog", cat)
    assert r.code == 0, (r.out, r.err)
