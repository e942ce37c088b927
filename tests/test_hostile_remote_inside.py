"""A backup device inside a remote source is never backed up (REQUIREMENTS M3; hostile8).

``backup s3://bucket -d s3://bucket/backup`` used to back up its own device: every run
stored the earlier runs' volumes and catalog copies again (the sets grew 300 kB, 525 kB,
789 kB over three runs of the same 300 kB). The same on an SFTP host whose tree holds
the device. Now the device is left out with a notice, as a local one is.
"""

from __future__ import annotations

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # real servers, several backups


def _three_backups(src: str, devices: list[str], cat: str) -> list[dict]:
    docs = []
    args = [a for d in devices for a in ("-d", d)]
    for _ in range(3):
        r = run_cli("backup", src, *args, "--catalog", cat, "--json")
        assert r.code == 0, r.err
        docs.append(r.json)
    return docs


def _paths(cat: str, set_id: str) -> list[str]:
    r = run_cli("files", "--set", set_id, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    return [f["path"] for f in r.json["files"]]


def test_an_s3_device_inside_an_s3_source_is_left_out(tmp_path, device_dirs, s3_server):
    bucket = s3_server.bucket("inside")
    client = s3_server.client()
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"data/f{i}", Body=bytes([i]) * 100_000)
    # a key that only starts like the device's prefix is no part of it
    client.put_object(Bucket=bucket, Key="backupnot/g", Body=b"kept")
    (disk,) = device_dirs(1)
    cat = str(tmp_path / "cat.sqlite")
    docs = _three_backups(
        s3_server.url(bucket, ""), [str(disk), s3_server.url(bucket, "backup")], cat
    )
    assert [d["bytes"] for d in docs] == [300_004] * 3, docs  # before: 300 kB, 525 kB, 789 kB
    # the first run scans before it labels the device: nothing of it is there yet
    assert docs[0]["excluded"] == {}, docs[0]
    for doc in docs[1:]:
        ((why, n),) = doc["excluded"].items()
        assert why.startswith(f"automatic: backup device s3://{bucket}/backup?") and n == 1
    paths = _paths(cat, docs[-1]["set"])
    assert not [p for p in paths if p.startswith(f"/{bucket}/backup/")], paths
    assert f"/{bucket}/backupnot/g" in paths
    r = run_cli("restore", "--catalog", cat, "--target", str(tmp_path / "r"))
    assert r.code == 0, r.err
    assert (tmp_path / "r" / bucket / "data" / "f2").read_bytes() == bytes([2]) * 100_000


def test_an_sftp_device_inside_an_sftp_source_is_left_out(tmp_path, device_dirs, sshd):
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    for i in range(3):
        (tree / "data" / f"f{i}").write_bytes(bytes([i]) * 100_000)
    (tree / "backup").mkdir()
    (disk,) = device_dirs(1)
    cat = str(tmp_path / "cat.sqlite")
    docs = _three_backups(sshd.url(tree), [str(disk), sshd.url(tree / "backup")], cat)
    assert [d["bytes"] for d in docs] == [300_000] * 3, docs
    paths = _paths(cat, docs[-1]["set"])
    assert not [p for p in paths if "/backup/" in p or p.endswith("/backup")], paths
    assert sum(p.endswith(("/f0", "/f1", "/f2")) for p in paths) == 3, paths
