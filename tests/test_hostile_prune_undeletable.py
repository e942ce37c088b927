"""A volume prune cannot delete is never reported as deleted (session-13 hostile round).

A dead volume made immutable (``chattr +i``: EPERM on unlink, as on a WORM share or a
volume another tool holds) made prune say, on stderr, that the device had "deleted 1
dead volume(s)" next to the line saying it could not, and a prune run again said
"nothing to prune" (exit 3) while the volume was still there. Now the device's line
counts what was done ("deleted 0 of 1"), and a prune that could do nothing of what
remains says "nothing was reclaimed".
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


def test_an_undeletable_dead_volume_is_never_reported_as_deleted(tmp_path):
    tree = make_tree(tmp_path / "src", seed=31, files=6)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    args = ("--catalog", cat)
    first = run_cli("backup", str(tree), "-d", str(d1), "-d", str(d2), *args, "--json")
    assert first.code == 0, first.err
    (tree / "new.bin").write_bytes(b"changed" * 1000)
    assert run_cli("backup", str(tree), "-d", str(d1), "-d", str(d2), *args).code == 0
    (volume,) = (d1 / "sets" / first.json["set"]).glob("*.pbv")
    if subprocess.run(["chattr", "+i", str(volume)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        r = run_cli("forget", "--keep-last", "1", "--prune", *args)
        assert r.code == 3, (r.out, r.err)
        assert f"{d1}: deleted 0 of 1 dead volume(s)" in r.err
        assert f"{d1}: deleted 1 dead volume(s)" not in r.err
        assert f"{d2}: deleted 1 dead volume(s)" in r.err  # the other went
        r = run_cli("prune", *args)
        assert r.code == 3, (r.out, r.err)
        assert "nothing was reclaimed" in r.out and "nothing to prune" not in r.out
    finally:
        subprocess.run(["chattr", "-i", str(volume)], check=True)
    r = run_cli("prune", *args)
    assert r.code == 0, (r.out, r.err)
    assert not volume.exists()
