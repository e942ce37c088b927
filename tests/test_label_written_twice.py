"""Two runs through different catalogs labelling one new directory device at once.

Both read no label; each wrote its own, the later over the earlier, so the first run's
set named a label the device no longer carried: its catalog found its device gone
("now holds another device"), its set unreadable through it. A new label is now linked
into place (it never replaces one): the run that comes second takes the label the device
carries. The second run here is a real backup process, through another catalog, made to
come at the worst moment: after this device looked and found no label, before it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_tree, run_cli
from parbackup.devices.base import DATA_PREFIXES
from parbackup.devices.local import DirectoryDevice
from parbackup.devices.url import parse_url


def test_a_device_labelled_meanwhile_keeps_the_other_runs_label(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", seed=11, files=5, max_size=30_000)
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    other = str(tmp_path / "other.sqlite")
    device = DirectoryDevice(parse_url(str(dev_dir)))
    device.open()
    runs: list[int] = []

    def another_run_labels_it_now() -> None:
        r = run_cli("backup", str(src), "-d", str(dev_dir), "--catalog", other)
        runs.append(r.code)
        assert r.code == 0, r.out + r.err

    looked = device.list

    def list_then_another_run(prefix: str = "") -> list:
        found = looked(prefix)
        if prefix == DATA_PREFIXES[-1]:  # ensure_label's last look before it writes
            another_run_labels_it_now()
        return found

    device.list = list_then_another_run  # type: ignore[method-assign]
    label = device.ensure_label()
    assert runs == [0]
    carried = json.loads((dev_dir / "label.json").read_text())["label"]
    assert label.label == carried  # this run takes the label the device carries
    assert not list(dev_dir.glob("label.json.tmp-*"))
    r = run_cli("verify", "--catalog", other)  # the other run's set still finds its device
    assert r.code == 0, r.out + r.err
