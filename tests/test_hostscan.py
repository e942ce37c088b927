"""A tree on a cluster host: its split scan and its file server (sources/hostscan.py,
sources/hosted.py), run here in real processes and sockets, without a cluster."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from conftest import make_tree
from parbackup.entries import HARDLINK, Entries
from parbackup.errors import SourceError
from parbackup.selection import ScanRules
from parbackup.sources import hostscan
from parbackup.sources.base import Identity, SourceChanged, SourceSpec
from parbackup.sources.hosted import HostedTree, ServeSpec, serve
from parbackup.sources.local import LocalTree
from parbackup.sources.registry import spec_for


def linked_tree(root: Path) -> Path:
    """A random tree plus one file with names at the root and in two top-level dirs."""
    make_tree(root, seed=11, files=60)
    for d in ("hl1", "hl2", "zz"):
        (root / d).mkdir()
    (root / "hl1" / "f").write_bytes(b"shared")
    os.link(root / "hl1" / "f", root / "hl2" / "g")
    os.link(root / "hl1" / "f", root / "a-rootlink")
    (root / "zz" / "x").write_bytes(b"x")
    os.link(root / "zz" / "x", root / "zz" / "y")  # both names in one piece
    for name in ("zz/x", "hl2", "a-rootlink", "file0.bin"):  # attributes travel too
        os.setxattr(root / name, "user.pb", name.encode(), follow_symlinks=False)
    return root


def rows(entries: Entries) -> list[tuple]:
    return [
        (entries.path_bytes(i), entries.kind[i], entries.size[i], entries.mode[i],
         entries.mtime_ns[i], entries.ino[i], entries.link_bytes(i), entries.meta_bytes(i),
         entries.source[i])
        for i in range(len(entries))
    ]  # fmt: skip


def split_scan(spec: SourceSpec, index: int, tasks: int) -> tuple[Entries, list]:
    """What the cluster does, with the tasks run one after the other here."""
    children = hostscan.top_level(spec)
    if children is None:
        pieces = {hostscan.ROOT: hostscan.scan_whole(spec)}
    else:
        pieces = {}
        for names in hostscan.groups(children, tasks):
            pieces.update(zip(names, hostscan.scan_names(spec, names), strict=True))
    out, problems = Entries(), []
    out.append(b"/other", 0, 1, 0o644, 0, 0, 1)  # another source before this one
    hostscan.merge(spec, out, index, children, pieces, lambda p, e: problems.append((p, e)))
    return out, problems


@pytest.mark.parametrize("tasks", [1, 3, 50])
def test_split_scan_is_the_local_scan(tmp_path: Path, tasks: int) -> None:
    """Pieces merged give the rows of one local scan, hard links across pieces
    rejoined (the first name in scan order stays the file)."""
    root = linked_tree(tmp_path / "src")
    spec = SourceSpec("tree", str(root), str(root), host="h")
    whole = Entries()
    whole.append(b"/other", 0, 1, 0o644, 0, 0, 1)
    LocalTree(hostscan.local_spec(spec)).scan(whole, 1, lambda p, e: None)
    merged, problems = split_scan(spec, 1, tasks)
    assert rows(merged) == rows(whole)
    assert not problems
    assert merged.has_meta()
    links = {merged.path(i): merged.link_bytes(i) for i in range(len(merged))
             if merged.kind[i] == HARDLINK}  # fmt: skip
    first = os.fsencode(root / "a-rootlink")
    assert links[str(root / "hl1" / "f")] == links[str(root / "hl2" / "g")] == first


def test_split_scan_with_a_selection_is_whole(tmp_path: Path) -> None:
    root = linked_tree(tmp_path / "src")
    select = ScanRules(patterns=("*.bin",))
    spec = SourceSpec("tree", str(root), str(root), select=select, host="h")
    assert hostscan.top_level(spec) is None
    whole = Entries()
    whole.append(b"/other", 0, 1, 0o644, 0, 0, 1)
    tree = LocalTree(hostscan.local_spec(spec))
    tree.scan(whole, 1, lambda p, e: None)
    merged, _ = split_scan(spec, 1, 4)
    assert rows(merged) == rows(whole)
    assert tree.excluded.total > 0


def test_source_names_its_host(tmp_path: Path) -> None:
    """``PATH?host=NAME`` names a host (the path need not exist here); a path that
    really holds a ``?`` stays a path."""
    spec = spec_for("/nowhere/data?host=media2")
    assert (spec.kind, spec.record_root, spec.host, spec.display) == (
        "tree",
        "/nowhere/data",
        "media2",
        "/nowhere/data",
    )
    odd = tmp_path / "odd?host=x"
    odd.mkdir()
    assert spec_for(str(odd)).host == ""


def _start_server(root: Path, key: bytes) -> tuple[Connection, threading.Thread, int]:
    """A file server for ``root`` in a thread: (the channel that ends it, the thread,
    its port)."""
    mine, theirs = socket.socketpair()
    ours, channel = Connection(mine.detach()), Connection(theirs.detach())
    thread = threading.Thread(target=serve, args=(ServeSpec(str(root), key), channel))
    thread.start()
    _what, port = ours.recv()
    return ours, thread, port


@pytest.fixture
def server(tmp_path: Path):
    """A file server for ``tmp_path/src`` in a thread, ended by closing its channel."""
    root = make_tree(tmp_path / "src", seed=12, files=10, big=(5_000_000,))
    key = secrets.token_bytes(32)
    ours, thread, port = _start_server(root, key)
    yield root, f"127.0.0.1:{port}", key
    ours.close()
    thread.join(10)


def test_file_server_reads_inside_its_root_only(server) -> None:
    root, address, key = server
    spec = SourceSpec("tree", str(root), str(root), host="h", via=f"{address}/{key.hex()}")
    tree = HostedTree(spec)
    try:
        big = root / "big0.bin"
        st = big.stat()
        expect = Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        with tree.open(str(big), expect) as reader:
            buf = bytearray(st.st_size)
            got = 0
            while got < len(buf):
                n = reader.readinto(got, memoryview(buf)[got : got + 4 << 20])
                assert n
                got += n
            assert reader.identity() == expect
        assert bytes(buf) == big.read_bytes()
        with pytest.raises(SourceChanged):  # a symlink is never followed
            tree.open(str(root / "link-to-file0"))
        other = Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino + 1, st.st_dev)
        with pytest.raises(SourceChanged):  # not the file the scan saw
            tree.open(str(big), other)
        for outside in ("/etc/passwd", f"{root}/../{root.name}/big0.bin", f"{root}x/a"):
            with pytest.raises(SourceError, match="not inside"):
                tree.open(outside)
    finally:
        tree.close()


def test_file_server_needs_its_key(server) -> None:
    root, address, _key = server
    wrong = secrets.token_bytes(32).hex()
    tree = HostedTree(SourceSpec("tree", str(root), str(root), host="h", via=f"{address}/{wrong}"))
    with pytest.raises(SourceError, match="cannot reach the file server"):
        tree.open(str(root / "big0.bin"))


def test_a_gone_file_server_fails_every_later_file_at_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", seed=16, files=5)
    key = secrets.token_bytes(32)
    ours, thread, port = _start_server(root, key)
    ours.close()  # the run ends: the server stops taking clients
    thread.join(10)
    tree = HostedTree(SourceSpec("tree", str(root), str(root), host="h",
                                 via=f"127.0.0.1:{port}/{key.hex()}"))  # fmt: skip
    with pytest.raises(SourceError, match="cannot reach the file server") as first:
        tree.open(str(root / "file0.bin"))
    with pytest.raises(SourceError) as later:  # no second attempt to connect
        tree.open(str(root / "file1.bin"))
    assert str(later.value) == str(first.value)
