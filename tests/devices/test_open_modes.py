"""Devices are opened for writing where the engine writes, and read-only where it reads.

A backup deletes what a killed run left on its devices (engine/recovery.py); that needs
the devices open for writing, while restore and verify open them read-only
(tests/devices/test_read_only_media.py).
"""

from __future__ import annotations

import pytest

from conftest import make_tree, run_cli
from test_resume import kill_mid_backup


@pytest.mark.slow
def test_next_backup_deletes_what_a_killed_run_left(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=51, files=30, big=(3 << 20,))
    other = make_tree(tmp_path / "other", seed=52, files=10)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    kill_mid_backup(tmp_path, cat, tree, devs, "2MiB")
    (dead_set,) = [s["set"] for s in run_cli("sets", "--catalog", cat, "--json").json["sets"]]
    left = [p for d in devs for p in (d / "sets" / dead_set).glob("*.pbv")]
    assert left, "the killed run left no volume to clean up"

    # another tree: nothing of the killed run is reused, so all of it must go
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(other), *dargs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert "could not delete" not in r.out + r.err
    assert [p for p in left if p.exists()] == []
