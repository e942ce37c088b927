"""Sources whose names fill a volume header (hostile, session 21).

Every volume header carries the set's source names as JSON, and a reader refuses a
header whose metadata passes 1 MiB (format.py ``MAX_VOLUME_META``), but the writer did
not look: ``backup DIR/*`` over a few thousand long names said complete (exit 0), then
``verify`` called every volume damaged ("volume header length is out of range", exit 1)
and ``rebuild-catalog`` could read nothing. A backup (and ``plan``) now refuses such
sources before anything is written; up to the limit, encrypted too (the sealed
metadata grows by a third in base64), the headers read back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from parbackup.format import SOURCES_ROOM

pytestmark = pytest.mark.slow  # backups and verifies through the CLI

PW = {"PARBACKUP_PASSWORD": "correct horse battery"}


def long_names(root: Path, room: int) -> list[str]:
    """Files under ``root`` (deep, long names) whose paths take as JSON just over
    ``room`` bytes; the last one taken passes it."""
    deep = root
    for level in range(14):
        deep = deep / (f"{level:02d}" + "d" * 200)
    deep.mkdir(parents=True)
    names: list[str] = []
    while len(json.dumps(sorted(names)).encode()) <= room:
        path = deep / (f"{len(names):05d}" + "f" * 200)
        path.write_bytes(os.urandom(64))
        names.append(str(path))
    return names


def test_sources_whose_names_overflow_a_volume_header_are_refused(tmp_path, device_dirs):
    names = long_names(tmp_path / "src", 1024 * 1024)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", *names, *dargs, "--catalog", cat, "--json")
    assert r.code == 2, r.out[:2000] + r.err  # before: complete, exit 0, verify exit 1
    assert f"more than the {SOURCES_ROOM} every volume header holds" in r.json["error"]
    assert not any((d / "sets").exists() for d in devs)  # nothing written
    r = run_cli("plan", *names, *dargs, "--catalog", cat)
    assert r.code == 2 and "every volume header holds" in r.err, r.out[:2000] + r.err
    r = run_cli("backup", str(tmp_path / "src"), *dargs, "--catalog", cat)  # the way out
    assert r.code == 0, r.err
    assert run_cli("verify", "--catalog", cat).code == 0


def test_sources_up_to_the_limit_give_headers_every_reader_takes(tmp_path, device_dirs):
    names = long_names(tmp_path / "src", SOURCES_ROOM)[:-1]  # just under the limit
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", *names, *dargs, "--catalog", cat, "--encrypt", env=PW)
    assert r.code == 0, r.out[:2000] + r.err
    r = run_cli("verify", "--catalog", cat, env=PW)
    assert r.code == 0, r.out[:2000] + r.err
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    r = run_cli("rebuild-catalog", *dargs, "--catalog", rebuilt, env=PW)
    assert r.code == 0, r.out[:2000] + r.err
    assert run_cli("files", "--catalog", rebuilt, "--json", env=PW).json["files"]
