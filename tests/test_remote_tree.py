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
    (info,) = r.json
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
