"""Device wrappers (retry, throttle, faults) forward the whole device interface.

The regression: ``?limit=`` wrapped a tape in a throttle that did not forward the tape's
own label handling, so a second backup onto the same tape wrote no label on the new tape
and the set could not be restored.
"""

from __future__ import annotations

import inspect

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.devices.base import LABEL_NAME, Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.testing.faulty import FaultyDevice
from parbackup.devices.throttle import ThrottledDevice
from parbackup.devices.wrappers import ForwardingDevice

WRAPPERS = [ForwardingDevice, RetryingDevice, ThrottledDevice, FaultyDevice]


def _interface() -> list[str]:
    """Every public method of Device: the seven and every default a kind may override."""
    return [
        name
        for name, member in inspect.getmembers(Device, inspect.isfunction)
        if not name.startswith("_") and name != "check_url"
    ]


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda c: c.__name__)
def test_every_wrapper_overrides_the_whole_interface(wrapper):
    inherited = [n for n in _interface() if getattr(wrapper, n) is getattr(Device, n)]
    assert inherited == [], f"{wrapper.__name__} runs Device's own {inherited} on itself"


def test_throttled_tape_starts_a_new_tape_with_a_new_label(tmp_path):
    image = tmp_path / "tape.img"
    url = f"tape://{image}?limit=200M"
    labels = []
    for run in range(2):
        dev = open_device(url)
        assert isinstance(dev, ThrottledDevice)
        dev.open()
        labels.append(dev.ensure_label())
        dev.put(f"run{run}", b"x" * 1000)
        dev.close()
    back = open_device(url)
    back.open(write=False)
    try:
        assert back.read_label() == labels[1] != labels[0]
        assert {o.name for o in back.list("")} == {LABEL_NAME, "run1"}
        with back.open_read("run1") as stream:
            assert stream.read() == b"x" * 1000
    finally:
        back.close()


@pytest.mark.slow
def test_two_backups_onto_a_limited_tape_then_restore(tmp_path):
    tree = make_tree(tmp_path / "src", seed=11, files=25, big=(1_500_000,))
    tape = f"tape://{tmp_path / 'tape.img'}?limit=100M"
    cat = str(tmp_path / "cat.sqlite")
    for _ in range(2):
        r = run_cli("backup", str(tree), "-d", tape, "--catalog", cat, "--json")
        assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
