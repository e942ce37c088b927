"""A device whose label.json is damaged (emptied by a crash, cut short, not JSON) is
named with the way out, and ``relabel`` takes it: the label is written back from the
volume headers, unchanged, and the device is the catalog's again.

Before, verify called every file on the device damaged ("device unavailable: ...:
unreadable device label"), backups left the device out, and ``relabel``, the command
made for a lost label, refused the same way (exit 1): a damaged label was worse than a
missing one, which relabel puts back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # real backups


@pytest.mark.parametrize(
    "damage",
    [b"", b'{"label": "', b"\x00" * 156, b'{"label": 5, "created": "", "kind": "file"}'],
    ids=["empty", "cut", "zeros", "not-a-label"],
)
def test_relabel_puts_back_a_damaged_label_from_the_volumes(
    tmp_path: Path, device_dirs, damage: bytes
) -> None:
    src = make_tree(tmp_path / "src", seed=7, files=12, max_size=50_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    assert run_cli("backup", str(src), *dargs, "--catalog", cat).code == 0
    label_file = devs[1] / "label.json"
    label = json.loads(label_file.read_bytes())["label"]
    label_file.write_bytes(damage)

    r = run_cli("verify", "--catalog", cat)
    assert r.code == 1
    assert f"parbackup relabel {devs[1]}" in r.out + r.err, r.out + r.err

    r = run_cli("relabel", str(devs[1]), "--json")
    assert r.code == 0, (r.out, r.err)
    assert r.json["label"] == label
    assert json.loads(label_file.read_bytes())["label"] == label

    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    r = run_cli("relabel", str(devs[1]))  # a readable label is left alone
    assert r.code == 1 and "already has a label" in r.err
