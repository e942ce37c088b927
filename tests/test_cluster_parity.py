"""``--parity`` with ``--cluster`` when the devices are disks of their hosts: the parity
is written after the data by the controller, which cannot reach those disks, so the set
gets none and the report says so in one line; a device lost afterwards then costs its
files, each named with the device's error (docs/GUARANTEES.md: why parity is not
computed or decoded through the cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterfixtures import DaskCluster, here_only, need_cluster
from conftest import make_tree, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need_cluster()
    with DaskCluster(tmp_path_factory.mktemp("cluster"), hosts=3, rate="400mbit") as c:
        yield c


def test_parity_of_host_disks_through_the_cluster_is_not_written_and_the_reports_say_so(
    cluster: DaskCluster, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", seed=5, files=20, big=(2_000_000,))
    shared = tmp_path / "shared"  # names no host: a shared mount, seen here too
    shared.mkdir()
    urls = [str(shared)]
    for i in cluster.indices:
        (path,) = cluster.mkdirs(i, "parity")
        urls.append(f"{path}?host=host{i}")
    on = ("--cluster", cluster.address)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for u in urls for a in ("-d", u)]
    done = run_cli("backup", str(src), *args, "--parity", "1", "--catalog", cat, "--json", *on)
    assert done.code == 3, done.out + done.err
    assert done.json["status"] == "complete"
    parity = done.json["parity"]
    assert parity["redundancy"] == 0 and parity["written"] == "after the data", parity
    assert parity["error"].startswith("parity not written: "), parity
    assert "no such directory" in parity["error"] and "Traceback" not in done.err
    shared.rename(tmp_path / "shared.away")
    back = tmp_path / "back"
    with here_only(back):
        r = run_cli("restore", "--target", str(back), "--catalog", cat, "--json", *on)
    assert r.code == 1 and r.json["status"] == "damaged", r.out + r.err
    assert r.json["damaged"] and "Traceback" not in r.err
    for lost in r.json["damaged"]:
        assert lost["device"] == str(shared)
        assert lost["error"].startswith("device unavailable: "), lost
