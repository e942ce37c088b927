"""rebuild-catalog under hostile conditions: killed half way; after a degraded backup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import volumes_on
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

RESTORABLE = ("complete", "degraded")


def rebuild_cmd(devs: list[Path], cat: str) -> list[str]:
    args = [a for d in devs for a in ("-d", str(d))]
    return [sys.executable, "-m", "parbackup", "rebuild-catalog", *args, "--catalog", cat]


@pytest.mark.slow
def test_killed_rebuild_leaves_nothing_prune_could_act_on(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=5, files=200, max_size=20_000)
    devs = device_dirs(3)
    orig = str(tmp_path / "orig.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    for n in range(4):
        (tree / f"round{n}").write_text(str(n))
        r = run_cli("backup", str(tree), *dargs, "--catalog", orig, "--json")
        assert r.code == 0 and r.json["status"] == "complete", r.err
    on_devices = volumes_on(devs)
    env = {**os.environ, "PYTHONPATH": SRC}
    for k in (1, 2, 3):  # killed while writing the k-th set into the new catalog
        cat = str(tmp_path / f"rebuilt{k}.sqlite")
        proc = subprocess.Popen(
            rebuild_cmd(devs, cat), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        seen = 0
        for raw in proc.stderr:  # a real event: the rebuild says which set it writes
            seen += b": writing " in raw
            if seen == k:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        assert seen == k, "the rebuild ended before the kill"
        r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
        assert volumes_on(devs) == on_devices, r.out  # nothing was deleted
        assert not os.path.exists(cat)  # no half-written catalog under the real name
        assert r.code == 1 and "no catalog" in r.json["error"], (r.code, r.out)
        partial = f"{cat}.partial"
        assert os.path.exists(partial)
        r = run_cli("prune", "--orphans", "--catalog", partial, "--json")
        assert r.code == 1 and "half written" in r.json["error"], (r.code, r.out)
        assert volumes_on(devs) == on_devices  # nothing was deleted
    # a rebuild that runs to its end replaces the partial one and finds every set whole
    cat = str(tmp_path / "rebuilt1.sqlite")
    r = run_cli("rebuild-catalog", *dargs, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert [s["status"] for s in r.json["sets"]] == ["complete"] * 4
    assert not os.path.exists(f"{cat}.partial")
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert volumes_on(devs) == on_devices
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out


def test_rebuild_after_a_degraded_backup_keeps_intact_files_whole(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=8, files=150, max_size=100_000)
    devs = device_dirs(3)
    orig = str(tmp_path / "orig.sqlite")
    urls = [str(devs[0]), str(devs[1]), f"faulty+file://{devs[2]}?fail_after=2MiB"]
    with Catalog(orig) as catalog:  # checkpoints make part of the failing volume durable
        report = run_backup([str(tree)], urls, catalog, BackupOptions(checkpoint_bytes=256 << 10))
    assert report.status == "degraded"
    # the failed device's unclosed volume holds intact records of files that were then
    # written again on the other devices
    (failed_volume,) = [n for (d, n) in volumes_on([devs[2]])]
    assert os.path.getsize(devs[2] / failed_volume) > 1 << 20
    cat = str(tmp_path / "rebuilt.sqlite")
    r = run_cli(
        "rebuild-catalog", *[a for d in devs for a in ("-d", str(d))], "--catalog", cat, "--json"
    )
    (found,) = r.json["sets"]
    assert found["incomplete"] == [], found["incomplete"]
    assert found["status"] == "degraded"  # one volume never got its end record
    assert r.code == 3
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out
