"""Parity sets written with a unit other than backup's (redundancy/layout.py UNIT): every
reader takes the unit from the stripe (catalog, parity volume header, row records), so
restore, verify, rebuild-catalog and repair work on any unit the format allows
(docs/FORMAT.md: a multiple of 64 bytes, at most 64 MiB). The backup's own unit may change
between releases: the sets written before must still restore."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.engine.parity import add_parity
from parbackup.engine.paritystream import window_for
from parbackup.engine.paritytee import slots_for
from parbackup.redundancy.layout import UNIT
from parbackup.redundancy.volume import read_parity_header

pytestmark = pytest.mark.slow


def _dev_args(devs: list[Path]) -> list[str]:
    return [a for d in devs for a in ("--device", str(d))]


@pytest.mark.parametrize("unit", [64 << 10, 3 << 20])
def test_a_set_with_another_unit_restores_verifies_rebuilds_and_repairs(
    tmp_path, device_dirs, unit
):
    """A plain backup on 3 devices, its parity then written on a 4th with ``unit`` (64 KiB:
    many rows; 3 MiB: one row longer than every column). With a data device gone: verify
    says recoverable, restore is whole; rebuild-catalog gives the stripe back with its
    unit; repair rebuilds the device byte for byte; verify is ok again."""
    assert unit != UNIT
    src = make_tree(tmp_path / "src", seed=7, files=25, big=(2_500_000, 1_700_001))
    devs = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *_dev_args(devs[:3]), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    set_hex = r.json["set"]
    data = [(json.loads((d / "label.json").read_text())["label"], str(d)) for d in devs[:3]]
    with Catalog(cat) as c:
        report = add_parity(c, set_hex, data, [str(devs[3])], unit=unit)
        stripe = c.parity(set_hex)
    assert report["redundancy"] == 1, report
    assert stripe["unit"] == unit
    (pbp,) = (devs[3] / "sets").rglob("*.pbp")
    with open(pbp, "rb") as fh:
        assert read_parity_header(fh).unit == unit
    lost = devs[1]
    before = {p.relative_to(lost): p.read_bytes() for p in lost.rglob("*.pb?")}
    shutil.rmtree(lost)

    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "recoverable", r.out + r.err
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)

    new_cat = str(tmp_path / "rebuilt.sqlite")
    survivors = [devs[0], devs[2], devs[3]]
    r = run_cli("rebuild-catalog", *_dev_args(survivors), "--catalog", new_cat, "--json")
    assert r.code in (0, 3), r.out + r.err
    with Catalog(new_cat) as c:
        assert c.parity(set_hex)["unit"] == unit

    new = tmp_path / "replacement"
    new.mkdir()
    r = run_cli("repair", "--set", set_hex, "--device", str(new), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert {p.relative_to(new): p.read_bytes() for p in new.rglob("*.pb?")} == before
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err


@pytest.mark.parametrize("unit", [64 << 10, 1 << 20, 4 << 20, 64 << 20])
def test_the_collectors_memory_does_not_grow_with_the_unit(unit):
    """A mover's slots and the rows summed ahead are a fixed number of bytes (a larger
    unit gets fewer of them), with the floor the path needs: two slots, four rows."""
    assert slots_for(unit) >= 2 and slots_for(unit) * unit <= max(8 << 20, 2 * unit)
    assert window_for(unit) >= 4 and window_for(unit) * unit <= max(16 << 20, 4 * unit)
    assert (slots_for(UNIT), window_for(UNIT)) == (8, 16)  # backup's unit: as before
