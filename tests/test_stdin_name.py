"""A --stdin-name restore could not make under a target is refused before anything is
written. Before, ``backup - --stdin-name ../../evil`` stored a set as complete (exit 0)
whose every restore into a directory then refused its one file as an unsafe path; so did
a name with a part over 255 bytes ("File name too long", verify ok), and one over 64 KiB
made a record header every reader refuses (verify: damaged)."""

from __future__ import annotations

import pytest

from conftest import run_cli

LONG = ["y" * 256, "a/" * 2047 + "b", "x/" * 35000 + "x"]  # a part of 256; 4096, 70001 in all


@pytest.mark.parametrize(
    "name",
    ["../../evil", "a/../../b", "./x", "a//b", "dir/", *LONG],
    ids=lambda name: name if len(name) < 20 else f"{len(name)}-bytes",
)
def test_a_stdin_name_restore_cannot_make_is_a_usage_error(tmp_path, device_dirs, name):
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", "-", "--stdin-name", name, *devs, "--catalog", cat, input=b"dump\n")
    assert r.code == 2, r.out[:1000] + r.err[:1000]
    assert "--stdin-name" in r.err and "Traceback" not in r.err
    assert len(r.err) < 200  # one line, not the name
    assert not (tmp_path / "cat.sqlite").exists()  # refused before the catalog is made


def test_the_longest_stdin_name_restore_can_make_restores(tmp_path, device_dirs):
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    name = "/".join(["p" * 255] * 4)  # parts of 255 bytes, 1023 in all
    r = run_cli("backup", "-", "--stdin-name", name, *devs, "--catalog", cat, input=b"dump\n")
    assert r.code == 0, r.out + r.err
    assert run_cli("verify", "--catalog", cat).code == 0
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert (tmp_path / "out" / name).read_bytes() == b"dump\n"


def test_a_nested_stdin_name_restores_under_the_target(tmp_path, device_dirs):
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", "-", "--stdin-name", "db/dump.sql", *devs, "--catalog", cat,
                input=b"dump\n")  # fmt: skip
    assert r.code == 0, r.out + r.err
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert (tmp_path / "out" / "db" / "dump.sql").read_bytes() == b"dump\n"
