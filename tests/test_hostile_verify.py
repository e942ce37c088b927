"""verify must not say ``ok`` of a set whose bytes it could not check (REQUIREMENTS X3)."""

from __future__ import annotations

import pytest

from conftest import make_tree, run_cli

pytestmark = pytest.mark.slow


def test_verify_of_a_set_rebuilt_from_some_of_its_devices_is_damaged(tmp_path, device_dirs):
    """A catalog rebuilt from one of a set's two devices lists only the files whose
    records lie there; the others' rows are unknown. verify checked what is listed and
    said ``ok`` (exit 0) of a set that lost half its files: it must say damaged."""
    src = make_tree(tmp_path / "src", seed=4, files=30, max_size=200_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    new = str(tmp_path / "rebuilt.sqlite")
    r = run_cli("rebuild-catalog", "-d", str(devs[0]), "--catalog", new, "--json")
    assert r.code == 3 and r.json["sets"][0]["unknown_file_ids"] > 0, r.out + r.err
    r = run_cli("verify", "--catalog", new, "--json")
    assert r.json["status"] == "damaged", r.out + r.err
    assert r.code == 1
    assert any("not listed" in d["error"] for d in r.json["damaged"]), r.json
    # with every device the rebuilt set is whole, and verify says so
    whole = str(tmp_path / "whole.sqlite")
    r = run_cli("rebuild-catalog", "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", whole)
    assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--catalog", whole, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err


def test_verify_names_the_files_a_rebuilt_set_holds_only_in_part(tmp_path, device_dirs):
    """A file split over two devices, the catalog rebuilt from one: rebuild-catalog
    lists the file as incomplete (its other bytes are on the missing device). verify
    checked only the restorable files and said ``ok`` (exit 0) of that set, having
    checked none of its bytes: it must name the file as damaged."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"\x01" * (3 << 20))  # split over both devices
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    args = ("-d", str(devs[0]), "-d", str(devs[1]), "--strategy", "threshold")
    r = run_cli("backup", str(src), *args, "--catalog", cat)
    assert r.code == 0, r.err
    new = str(tmp_path / "rebuilt.sqlite")
    r = run_cli("rebuild-catalog", "-d", str(devs[0]), "--catalog", new, "--json")
    assert r.code == 3, r.out + r.err
    assert [f["path"] for f in r.json["sets"][0]["incomplete"]] == [str(src / "big")], r.out
    r = run_cli("verify", "--catalog", new, "--json")
    assert r.code == 1 and r.json["status"] == "damaged", r.out + r.err
    assert str(src / "big") in [d["path"] for d in r.json["damaged"]], r.json
