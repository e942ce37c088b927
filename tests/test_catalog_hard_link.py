"""A catalog file with a second name (a hard link, or a file bind mount) is refused
(hostile, session 21; the bind mount, leftovers of session 21).

The run lock (``<catalog>.lock``), the readers' lock and SQLite's write-ahead log
(``<catalog>-wal``) all go by the name the catalog is opened by; symlinks are resolved,
but a hard link is a second real name. Tried by hand: a backup through the link ran
beside one through the first name (no lock stopped it), each wrote its own log over the
one file, both said complete (exit 0), and once both had ended one of the two sets had
left the catalog. Real processes; the first backup paused by the ``faulty+`` device's
FIFO, no sleeps. A file bind-mounted onto another name adds no link but is the same:
the catalog's ``st_nlink`` stays 1, so ``/proc/self/mountinfo`` tells.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from killpoints import pause_point, wait_paused


def bind(cat: Path, name: Path) -> None:
    """Mount the catalog file onto ``name``: a second name with one link."""
    name.touch()
    subprocess.run(["mount", "--bind", str(cat), str(name)], check=True)


def unname(name: Path) -> None:
    """Take ``name`` away, however it was made."""
    if f" {name} " in Path("/proc/self/mountinfo").read_text():  # ismount misses a file
        subprocess.run(["umount", str(name)], check=True)
    os.unlink(name)


SECOND_NAMES = {
    "hard link": (os.link, "has 1 other name(s) (a hard link)"),
    "bind mount": (bind, "has another name by a file bind mount"),
}


@pytest.mark.parametrize("how", SECOND_NAMES)
def test_a_backup_through_a_second_name_beside_a_running_one_loses_no_set(
    tmp_path: Path, device_dirs, how: str
) -> None:
    make_name: Callable[[Path, Path], None]
    make_name, refusal = SECOND_NAMES[how]
    src = make_tree(tmp_path / "src", seed=21, files=10, max_size=50_000, big=(300_000,))
    devs = device_dirs(2)
    cat, link = tmp_path / "cat.sqlite", tmp_path / "other.sqlite"
    dargs = [a for d in devs for a in ("-d", str(d))]
    first = run_cli("backup", str(src), *dargs, "--catalog", str(cat), "--json")
    assert first.code == 0, first.err
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    paused = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", str(src), "--catalog", str(cat), "--json",
         "-d", f"faulty+file://{devs[0]}?pause_after=100K&gate={gate}", "-d", str(devs[1])],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_paused(paused, fifo), paused.communicate()
        make_name(cat, link)  # the catalog gets a second name while a backup runs
        second = run_cli("backup", str(src), *dargs, "--catalog", str(link), "--json")
        gate.touch()
        out, err = paused.communicate(timeout=300)
    finally:
        if paused.poll() is None:
            paused.kill()
            paused.wait()
        with contextlib.suppress(FileNotFoundError):
            unname(link)
    assert paused.returncode == 0, err.decode()
    said = [json.loads(r)["set"] for r in (first.out, out.decode(), second.out) if '"set"' in r]
    listed = {
        s["set"]: s["status"] for s in run_cli("sets", "--catalog", str(cat), "--json").json["sets"]
    }
    for set_id in said:  # before: the second run's set (or the first's) was gone
        assert listed.get(set_id) == "complete", (set_id, listed)
    assert second.code == 1, second.out + second.err
    assert f"catalog {link} {refusal}" in second.json["error"]
    assert run_cli("verify", "--catalog", str(cat)).code == 0


@pytest.mark.parametrize("how", SECOND_NAMES)
def test_every_command_through_either_name_of_a_catalog_is_refused(
    tmp_path: Path, device_dirs, how: str
) -> None:
    make_name: Callable[[Path, Path], None]
    make_name, refusal = SECOND_NAMES[how]
    src = make_tree(tmp_path / "src", seed=22, files=6, max_size=20_000)
    devs = device_dirs(2)
    cat, link = tmp_path / "cat.sqlite", tmp_path / "other.sqlite"
    dargs = [a for d in devs for a in ("-d", str(d))]
    assert run_cli("backup", str(src), *dargs, "--catalog", str(cat)).code == 0
    make_name(cat, link)
    before = cat.read_bytes()
    try:
        refused_everywhere(cat, link, refusal, src, dargs, tmp_path / "back")
    finally:
        unname(link)  # one name again: everything runs
    assert not (tmp_path / "back").exists()
    assert not Path(f"{link}-wal").exists()  # nothing opened it as a database
    assert cat.read_bytes() == before
    assert run_cli("backup", str(src), *dargs, "--catalog", str(cat)).code == 0
    assert run_cli("verify", "--catalog", str(cat)).code == 0


def refused_everywhere(
    cat: Path, link: Path, refusal: str, src: Path, dargs: list[str], back: Path
) -> None:
    """Every command refused through either name, in one line naming it."""
    for name in (cat, link):
        for args in (
            ("backup", str(src), *dargs),
            ("prune",),
            ("forget", "--keep-last", "1"),
            ("restore", "--target", str(back)),
            ("verify",),
            ("sets",),
        ):
            r = run_cli(*args, "--catalog", str(name))
            assert r.code == 1 and r.err.count("\n") == 1, (args, r.out + r.err)
            assert f"catalog {name} {refusal}" in r.err, r.err
