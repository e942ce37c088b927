"""What ``verify`` prints for damage that lies in no file's bytes (session 18).

A volume whose end record is cut (the files' records whole) is damaged as a volume, not
as a file: its entry has no path. ``verify`` printed it as ``DAMAGED:  (DEVICE): volume
is cut short``, naming nothing (seen on a rebuilt catalog in session 17; the catalog of
the backup prints the same). The line now names the volume; ``--json`` names it in
``volume`` as before. No file's bytes are lost: ``volume-damaged``, exit 3
(tests/test_verify_cut_volume.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_tree, run_cli


def test_a_damaged_volume_is_named_in_the_damaged_line(tmp_path: Path, device_dirs) -> None:
    src = make_tree(tmp_path / "src", seed=7, files=10, max_size=100_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    assert run_cli("backup", str(src), *dargs, "--catalog", cat).code == 0
    (volume,) = (devs[0] / "sets").rglob("*.pbv")
    os.truncate(volume, volume.stat().st_size - 100)  # the end record, no file's bytes
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    assert run_cli("rebuild-catalog", *dargs, "--catalog", rebuilt).code == 3
    name = str(volume.relative_to(devs[0]))
    for catalog in (cat, rebuilt):
        r = run_cli("verify", "--catalog", catalog)
        assert r.code == 3, r.out + r.err
        damaged = [ln for ln in (r.out + r.err).splitlines() if ln.startswith("DAMAGED:")]
        assert damaged == [f"DAMAGED: volume {name} ({devs[0]}): volume is cut short"], damaged
        r = run_cli("verify", "--catalog", catalog, "--json")
        assert r.json["status"] == "volume-damaged", r.out + r.err
        assert [(d["path"], d["volume"]) for d in r.json["damaged"]] == [("", name)]
