"""A file whose time a set cannot hold never ends a backup: ext4 keeps times up to the
year 2446 (any user can ``touch -d 2400-01-01`` a file in their home), past what 64-bit
nanoseconds hold (2262). Before, one such file ended the whole backup with "internal
error: OverflowError" (exit 1, nothing backed up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import restored_root, run_cli

FAR_NS = 15032385535 * 10**9  # 2446-05-10, the latest time ext4 keeps
OLD_NS = -(2**31) * 10**9  # 1901-12-13, the earliest
TIME_MAX = (1 << 63) - 1  # the latest time a set holds (2262-04-11)


@pytest.mark.slow
def test_a_file_dated_past_2262_is_backed_up_named_and_restored(tmp_path, device_dirs):
    src = tmp_path / "src"
    src.mkdir()
    far, old, plain = src / "far", src / "old", src / "plain"
    far.write_bytes(b"from the future\n" * 1000)
    old.write_bytes(b"from the past\n")
    plain.write_bytes(b"now\n")
    os.utime(far, ns=(FAR_NS, FAR_NS))
    os.utime(old, ns=(OLD_NS, OLD_NS))
    assert far.stat().st_mtime_ns == FAR_NS  # this file system holds it (ext4, tmpfs)
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    for run in ("full", "incremental"):
        r = run_cli("backup", str(src), *devs, "--catalog", cat, "--json",
                    *(["--incremental"] if run == "incremental" else []))  # fmt: skip
        assert r.code == 3, r.out + r.err
        assert r.json["status"] == "complete"
        named = {s["path"]: s["error"] for s in r.json["skipped"]}
        assert list(named) == [str(far)]
        assert "past what a backup set holds" in named[str(far)]
        out = tmp_path / f"out-{run}"
        r = run_cli("restore", "--target", str(out), "--catalog", cat)
        assert r.code == 0, r.out + r.err
        back = restored_root(out, src)
        for p in (far, old, plain):
            assert (back / p.name).read_bytes() == p.read_bytes()
        assert (back / "old").stat().st_mtime_ns == OLD_NS
        assert (back / "far").stat().st_mtime_ns // 10**9 == TIME_MAX // 10**9  # 2262
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err


def test_a_far_time_keeps_the_file_consistent(tmp_path: Path, device_dirs):
    """The mover's check after reading compares the file's time as the scan held it, so
    the file is not called changed while it was read (it would not be restored)."""
    src = tmp_path / "src"
    src.mkdir()
    far = src / "far"
    far.write_bytes(os.urandom(300_000))
    os.utime(far, ns=(FAR_NS, FAR_NS))
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *devs, "--catalog", cat, "--json")
    assert r.code == 3 and not r.json.get("inconsistent"), r.out
    r = run_cli("files", "--catalog", cat)
    assert r.code == 0 and "2262-04-11" in r.out, r.out + r.err
