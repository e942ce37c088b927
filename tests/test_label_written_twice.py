"""Two runs through different catalogs labelling one new directory device at once.

Both read no label; each wrote its own, the later over the earlier, so the first run's
set named a label the device no longer carried: its catalog found its device gone
("now holds another device"), its set unreadable through it. A new label is now linked
into place (it never replaces one): the run that comes second takes the label the device
carries. The second run here is a real backup process, through another catalog, made to
come at the worst moment: after this device looked and found no label, before it wrote.
On an SFTP host (a real sshd) the label is moved into place by SFTPv3 ``rename``, which
fails where the name is taken; on S3 (moto's server) it is one PUT with
``If-None-Match: *``: there the other run is a second device object labelling it.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_tree, run_cli
from parbackup.devices.base import DATA_PREFIXES, Device
from parbackup.devices.local import DirectoryDevice
from parbackup.devices.registry import open_device
from parbackup.devices.url import parse_url
from parbackup.model import Label


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


def labelled_meanwhile(mine: Device, theirs: Device) -> tuple[Label, Label]:
    """(the label ``mine.ensure_label`` returns, the one ``theirs`` wrote): ``theirs``
    labels the device after ``mine`` looked and found none, before it writes."""
    written: list[Label] = []
    looked = mine.list

    def list_then_another_run(prefix: str = "") -> list:
        found = looked(prefix)
        if prefix == DATA_PREFIXES[-1]:  # ensure_label's last look before it writes
            written.append(theirs.ensure_label())
        return found

    mine.list = list_then_another_run  # type: ignore[method-assign]
    label = mine.ensure_label()
    assert len(written) == 1
    return label, written[0]


def opened(url: str) -> Device:
    device = open_device(url)
    device.open()
    return device


def test_an_sftp_device_labelled_meanwhile_keeps_the_other_runs_label(sshd, tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    mine, theirs = opened(sshd.url(dev_dir)), opened(sshd.url(dev_dir))
    try:
        label, other = labelled_meanwhile(mine, theirs)
    finally:
        mine.close()
        theirs.close()
    assert label == other  # not replaced: this run takes the label the device carries
    assert json.loads((dev_dir / "label.json").read_text())["label"] == other.label
    assert sorted(p.name for p in dev_dir.iterdir()) == ["label.json"]  # no temporary file


def test_an_s3_device_labelled_meanwhile_keeps_the_other_runs_label(s3_server) -> None:
    bucket = s3_server.bucket("labelled-twice")
    url = s3_server.url(bucket, "dev")
    mine, theirs = opened(url), opened(url)
    try:
        label, other = labelled_meanwhile(mine, theirs)
    finally:
        mine.close()
        theirs.close()
    assert label == other
    body = s3_server.client().get_object(Bucket=bucket, Key="dev/label.json")["Body"].read()
    assert json.loads(body)["label"] == other.label
    keys = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in keys] == ["dev/label.json"]
