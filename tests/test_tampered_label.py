"""A tampered ``label.json`` (a label that is not parbackup's 32 hex digits) is refused
at the boundary as an unreadable label naming the device; it used to reach the code
that turns labels into bytes and end ``rebuild-catalog`` with "internal error:
ValueError" (and a backup's mover with it)."""

from __future__ import annotations

import json

import pytest

from conftest import make_tree, run_cli


@pytest.mark.slow
def test_a_tampered_label_is_named_never_an_internal_error(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=81, files=10, max_size=5000)
    d0, d1 = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    body = json.loads((d1 / "label.json").read_text())
    body["label"] = "not-hex-at-all"
    (d1 / "label.json").write_text(json.dumps(body))

    r = run_cli("rebuild-catalog", "-d", str(d0), "-d", str(d1), "--catalog",
                str(tmp_path / "new.sqlite"))  # fmt: skip
    assert r.code == 3 and "internal error" not in r.err, r.out + r.err
    assert f"{d1}: unreadable device label" in r.out + r.err
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat, "--json")
    assert r.code == 3 and "internal error" not in r.err, r.out + r.err
    failed = [d for d in r.json["devices"] if d["status"] == "failed"]
    assert [d["url"] for d in failed] == [str(d1)]
    assert "unreadable device label" in failed[0]["error"]
