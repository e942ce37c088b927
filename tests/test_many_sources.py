"""Sources whose names fill a volume header (hostile, session 21).

Every volume header carries the set's source names as JSON, and a reader refuses a
header whose metadata passes 1 MiB (format.py ``MAX_VOLUME_META``), but the writer did
not look: ``backup DIR/*`` over a few thousand long names said complete (exit 0), then
``verify`` called every volume damaged ("volume header length is out of range", exit 1)
and ``rebuild-catalog`` could read nothing. A backup (and ``plan``) now refuses such
sources before anything is written; up to the limit, encrypted too (the sealed
metadata grows by a third in base64), the headers read back.

Sources inside other sources were found by comparing every source with every tree: ten
thousand sources took 15 s before the first byte (24,000 took two minutes); each source's
parents are looked up now, with the same answer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from conftest import run_cli
from parbackup.engine.prepare import _inside, source_specs
from parbackup.format import SOURCES_ROOM

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


@pytest.mark.slow  # backups and verifies through the CLI
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


@pytest.mark.slow
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


def test_a_source_inside_another_is_left_out_once_each(tmp_path):
    for d in ("a/b/c", "a/x", "d", "ab"):
        (tmp_path / d).mkdir(parents=True)
    t = str(tmp_path)
    named = [f"{t}/a/b/c", f"{t}/a", f"{t}/ab", f"{t}/a/b", f"{t}/d/", f"{t}/a", f"{t}/a/x"]
    assert [s.record_root for s in source_specs(named)] == [f"{t}/a", f"{t}/ab", f"{t}/d"]


def test_the_parent_lookup_answers_as_comparing_every_pair():
    rng = random.Random(21)
    for _ in range(3000):
        paths = [
            "/"
            + "/".join(rng.choice("ab") * rng.randint(0, 2) for _ in range(rng.randint(0, 4)))
            + rng.choice(("", "/", "//"))
            for _ in range(rng.randint(1, 6))
        ]
        trees: dict[str, set[str]] = {}
        for p in paths:
            trees.setdefault(p.rstrip("/"), set()).add(p)
        for p in paths:
            pairwise = any(p != t and p.startswith(t.rstrip("/") + "/") for t in paths)
            assert _inside(p, trees) == pairwise, (p, paths)
