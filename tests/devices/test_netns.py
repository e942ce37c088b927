"""A backup across two distant hosts: network namespaces on shaped veth links, each with sshd."""

from __future__ import annotations

import contextlib

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from servers import NetnsHost, SshServer

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_backup_across_two_namespace_hosts(tmp_path):
    if not NetnsHost.available():
        pytest.skip("needs root and ip netns (network namespaces)")
    tree = make_tree(tmp_path / "src", seed=12, files=30, big=(3_000_000,))
    with contextlib.ExitStack() as stack:
        urls = []
        for i in (1, 2):
            host = stack.enter_context(NetnsHost(i, rate="200mbit"))
            ssh = stack.enter_context(
                SshServer(tmp_path / f"ssh{i}", host=host.ip, port=2222, netns=host.name)
            )
            (tmp_path / f"dev{i}").mkdir()
            urls.append(ssh.url(tmp_path / f"dev{i}"))
        cat = str(tmp_path / "cat.sqlite")
        r = run_cli("backup", str(tree), "-d", urls[0], "-d", urls[1], "--catalog", cat, "--json")
        assert r.code == 0, r.out + r.err
        assert [d["status"] for d in r.json["devices"]] == ["ok", "ok"]
        assert all(d["bytes"] > 0 for d in r.json["devices"])
        out = tmp_path / "out"
        r = run_cli("restore", "--target", str(out), "--catalog", cat)
        assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
