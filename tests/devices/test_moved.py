"""A device found somewhere else at restore time is recognised by its label (D4), per kind."""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot


def _make_dirs(tmp_path, n):
    dirs = []
    for i in range(n):
        d = tmp_path / f"d{i}"
        d.mkdir()
        dirs.append(d)
    return dirs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "sftp", "s3"])
def test_restore_and_verify_from_a_moved_device(kind, tmp_path, request):
    tree = make_tree(tmp_path / "src", seed=9, files=20, big=(1_200_000,))
    if kind == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.bucket(f"moved-{tmp_path.name[-20:].lower().replace('_', '-')}")
        urls = [s3.url(bucket, "a"), s3.url(bucket, "b")]

        def move() -> str:
            client = s3.client()
            for obj in client.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]:
                new = "moved/" + obj["Key"][2:]
                client.copy_object(Bucket=bucket, Key=new, CopySource=f"{bucket}/{obj['Key']}")
                client.delete_object(Bucket=bucket, Key=obj["Key"])
            return s3.url(bucket, "moved")
    else:
        dirs = _make_dirs(tmp_path, 2)
        sshd = request.getfixturevalue("sshd") if kind == "sftp" else None
        urls = [sshd.url(d) if sshd else str(d) for d in dirs]

        def move() -> str:
            new = tmp_path / "elsewhere"
            dirs[0].rename(new)
            return sshd.url(new) if sshd else f"file://{new}"

    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", urls[0], "-d", urls[1], "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert all(d["bytes"] > 0 for d in r.json["devices"])
    new_url = move()

    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 1  # the device is not where the catalog last saw it
    r = run_cli("verify", "--catalog", cat, "--device", new_url, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--device", new_url)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
