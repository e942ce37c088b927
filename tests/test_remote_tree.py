"""Remote trees (F1, F2): an SFTP tree and a local tree in one set, through a real sshd."""

from __future__ import annotations

import os

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot


@pytest.mark.slow
def test_local_and_sftp_sources_in_one_set(sshd, tmp_path, device_dirs):
    local = make_tree(tmp_path / "local", seed=21, files=15)
    remote = make_tree(tmp_path / "remote", seed=22, files=25, big=(5_000_000,))
    url = sshd.url(remote)
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(local), url, *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err + r.out
    doc = r.json
    sizes = sum(p.stat().st_size for t in (local, remote) for p in t.rglob("*.bin"))
    assert doc["bytes"] == sizes

    r = run_cli("sets", "--catalog", cat, "--json")
    (info,) = r.json["sets"]
    assert sorted(info["sources"]) == sorted(
        [str(local), url.split("?")[0] + "?" + url.split("?")[1]]
    )
    assert all("identity" in s or s == str(local) for s in info["sources"])

    # the remote tree is recorded under /<host>/<path> and restores on its own
    where = f"/{sshd.host}{remote}"
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--include", where, "--catalog", cat)
    assert r.code == 0, r.err + r.out
    assert snapshot(out / sshd.host / str(remote).lstrip("/")) == _seconds(snapshot(remote))
    assert not (out / str(local).lstrip("/")).exists()
    r = run_cli("restore", "--target", str(tmp_path / "all"), "--catalog", cat)
    assert r.code == 0
    assert snapshot(restored_root(tmp_path / "all", local)) == snapshot(local)

    # incremental: only the file changed on the remote host is copied again
    victim = remote / "big0.bin"
    victim.write_bytes(os.urandom(100_000))
    os.utime(victim, (1_700_000_000, 1_700_000_000))
    r = run_cli("backup", str(local), url, *args, "--catalog", cat, "--json", "--incremental")
    assert r.code == 0, r.err
    assert r.json["kind"] == "incremental" and r.json["bytes"] == 100_000
    out2 = tmp_path / "out2"
    assert run_cli("restore", "--target", str(out2), "--catalog", cat).code == 0
    assert snapshot(out2 / sshd.host / str(remote).lstrip("/")) == _seconds(snapshot(remote))


def _seconds(state: dict) -> dict:
    """SFTP carries mtimes in whole seconds: what a remote tree restores with."""
    out = {}
    for rel, v in state.items():
        if v[0] == "file":
            v = (v[0], v[1], v[2] // 1_000_000_000 * 1_000_000_000, v[3])
        out[rel] = v
    return out


@pytest.mark.slow
def test_s3_tree_next_to_a_local_one(s3_server, tmp_path, device_dirs):
    bucket = s3_server.bucket("trees")
    s3 = s3_server.client()
    objects = {
        "data/a.txt": b"hello",
        "data/sub/deep/b.bin": os.urandom(9 << 20),  # several records
        "data/sub/c.bin": os.urandom(100_000),
        "data/empty": b"",
        "other/not-in-the-tree": b"x",
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    local = make_tree(tmp_path / "local", seed=23, files=8)
    url = s3_server.url(bucket, "data")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", url, str(local), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err + r.out
    local_bytes = sum(p.stat().st_size for p in local.rglob("*.bin"))
    tree_bytes = sum(len(v) for k, v in objects.items() if k.startswith("data/"))
    assert r.json["bytes"] == local_bytes + tree_bytes

    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--include", f"/{bucket}/data", "--catalog", cat)
    assert r.code == 0, r.err + r.out
    for key, body in objects.items():
        path = out / bucket / key
        assert path.read_bytes() == body if key.startswith("data/") else not path.exists()
    assert not (out / str(local).lstrip("/")).exists()

    s3.put_object(Bucket=bucket, Key="data/sub/c.bin", Body=b"changed")
    r = run_cli("backup", url, str(local), *args, "--catalog", cat, "--json", "--incremental")
    assert r.code == 0, r.err
    assert r.json["bytes"] == len(b"changed")
    out2 = tmp_path / "out2"
    assert run_cli("restore", "--target", str(out2), "--catalog", cat).code == 0
    assert (out2 / bucket / "data/sub/c.bin").read_bytes() == b"changed"
    assert (out2 / bucket / "data/sub/deep/b.bin").read_bytes() == objects["data/sub/deep/b.bin"]
    assert snapshot(restored_root(out2, local)) == snapshot(local)
