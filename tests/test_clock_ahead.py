"""A clock once set ahead never makes retention forget the newest backups.

A set recorded while the clock was wrong (here dated 2031 through ``--time``, as a clock
set ahead would date it) sorted after every later set by time, so ``forget --keep-last
1 --prune`` kept that stale set and forgot, then deleted, each newer one: the set
``restore`` calls latest went. The set made last is now always kept
(plan/retention.py).
"""

from __future__ import annotations

import pytest

from conftest import restored_root, run_cli


@pytest.mark.slow
def test_forget_keeps_the_set_made_last_when_an_older_one_is_dated_ahead(tmp_path, device_dirs):
    src = tmp_path / "src"
    src.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    for night, when in enumerate(("2031-01-01T02:00:00+00:00", None, None)):
        (src / "f").write_bytes(f"night {night}\n".encode())
        at = ["--time", when] if when else []
        r = run_cli("backup", str(src), *devs, "--catalog", cat, *at)
        assert r.code == 0, r.out + r.err
    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert (restored_root(out, src) / "f").read_bytes() == b"night 2\n"
    r = run_cli("sets", "--catalog", cat, "--json")
    kept = [s for s in r.json["sets"] if s["status"] == "complete"]
    assert len(kept) == 2  # the one dated ahead (the policy's "last") and the latest made


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "0001-01-01"]
)
def test_a_time_out_of_range_is_a_usage_error(tmp_path, device_dirs, when):
    """``--time`` past year 9999 or before year 1 once in UTC was "internal error:
    OverflowError" (exit 1); now a usage error naming the range, before anything."""
    src = tmp_path / "src"
    src.mkdir()
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    cat = tmp_path / "cat.sqlite"
    r = run_cli("backup", str(src), *devs, "--catalog", str(cat), "--time", when)
    assert r.code == 2, r.out + r.err
    assert "out of range" in r.err and "internal error" not in r.err
    assert not cat.exists()
