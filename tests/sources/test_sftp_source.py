"""SftpTree (sources/sftp.py) driven directly against a real sshd: scan into an Entries
table, read byte ranges, and tell a file that changed before or while it was read."""

from __future__ import annotations

import os
import select
import signal
import stat
from pathlib import Path

import pytest
from scanning import rows, scanned

from conftest import make_tree
from parbackup.devices.base import ACCEPT_NEW_HOST_KEYS_ENV
from parbackup.entries import DIR, FILE, SYMLINK, Entries
from parbackup.errors import SourceError, UsageError
from parbackup.sources.base import SourceChanged, identity_of
from parbackup.sources.registry import open_source, spec_for
from parbackup.sources.sftp import SftpTree
from servers import SSHD, SshServer, process_tree


@pytest.fixture
def tree(sshd, tmp_path):
    """A remote tree and its open source; closed after the test."""
    root = make_tree(tmp_path / "remote", seed=41, files=30, big=(3_000_000,))
    source = open_source(spec_for(sshd.url(root)))
    assert isinstance(source, SftpTree)
    with source:
        yield root, source, f"/{sshd.host}{root}"


def test_scan_records_every_entry_under_host_and_path(tree):
    root, source, top = tree
    os.mkfifo(root / "a-fifo")
    out, errors = scanned(source, index=3)
    assert errors == [(f"{top}/a-fifo", "special file not backed up")]
    assert out.path(0) == top and out.kind[0] == DIR  # the root first
    got = rows(out)
    assert len(got) == len(out)  # each path once
    want = {top}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name != "a-fifo":
                want.add(top + os.path.join(dirpath, name)[len(str(root)) :])
    assert set(got) == want
    for path, i in got.items():
        st = os.lstat(root / path[len(top) + 1 :]) if path != top else os.lstat(root)
        assert out.source[i] == 3 and out.mode[i] == st.st_mode
        assert out.mtime_ns[i] == int(st.st_mtime) * 1_000_000_000  # SFTP: whole seconds
        assert out.ctime_ns[i] == out.mtime_ns[i] and out.ino[i] == 0
        if stat.S_ISREG(st.st_mode):
            assert (out.kind[i], out.size[i]) == (FILE, st.st_size)
        elif stat.S_ISLNK(st.st_mode):
            assert out.kind[i] == SYMLINK
            assert out.link_bytes(i) == os.fsencode(os.readlink(root / path[len(top) + 1 :]))
        else:
            assert out.kind[i] == DIR
    # depth first: every entry comes after its directory
    for path, i in got.items():
        if path != top:
            assert got[os.path.dirname(path)] < i


def test_read_ranges_of_a_file(tree):
    root, source, top = tree
    out, _ = scanned(source)
    i = rows(out)[f"{top}/big0.bin"]
    data = (root / "big0.bin").read_bytes()
    buf = bytearray(1 << 20)
    with source.open(out.path_bytes(i), identity_of(out, i)) as reader:  # as the mover does
        got, at = bytearray(), 0
        while n := reader.readinto(at, memoryview(buf)):
            got += buf[:n]
            at += n
        assert bytes(got) == data
        assert reader.readinto(len(data) - 10, memoryview(buf)) == 10  # short only at the end
        assert buf[:10] == data[-10:]
        assert reader.readinto(12345, memoryview(buf)[:100]) == 100
        assert buf[:100] == data[12345:12445]
        assert reader.readinto(len(data) + 5, memoryview(buf)) == 0
        assert source.changes(identity_of(out, i), reader.identity()) == []
    assert source.fields == ("size", "mtime")


def test_file_changed_between_scan_and_read(tree):
    root, source, top = tree
    out, _ = scanned(source)
    i = rows(out)[f"{top}/file0.bin"]
    os.utime(root / "file0.bin", (1_600_000_000, 1_600_000_000))
    with pytest.raises(SourceChanged, match=r"changed since the scan \(mtime\)"):
        source.open(out.path(i), identity_of(out, i))
    now = source.identity(out.path(i))
    assert now is not None and now.mtime_ns == 1_600_000_000 * 10**9
    with source.open(out.path(i)) as reader:  # without what the scan saw: opens
        assert reader.identity() == now


def test_file_that_grows_while_read_is_seen_by_identity(tree):
    root, source, top = tree
    out, _ = scanned(source)
    i = rows(out)[f"{top}/big0.bin"]
    expect = identity_of(out, i)
    buf = bytearray(1 << 16)
    with source.open(out.path(i), expect) as reader:
        assert reader.readinto(0, memoryview(buf)) == len(buf)
        with open(root / "big0.bin", "ab") as fh:
            fh.write(b"more")
        os.utime(root / "big0.bin", (1_600_000_000, 1_600_000_000))
        assert reader.readinto(expect.size - 4, memoryview(buf)) == 4  # still its old end
        assert source.changes(expect, reader.identity()) == ["size", "mtime"]


def test_file_that_shrinks_while_read_raises_changed(tree):
    root, source, top = tree
    out, _ = scanned(source)
    i = rows(out)[f"{top}/big0.bin"]
    buf = bytearray(1 << 20)
    with source.open(out.path(i), identity_of(out, i)) as reader:
        assert reader.readinto(0, memoryview(buf)) == len(buf)
        os.truncate(root / "big0.bin", 1_500_000)
        with pytest.raises(SourceChanged, match="shrank"):
            reader.readinto(1 << 20, memoryview(buf))


def test_file_replaced_by_a_symlink_is_not_followed(tree, tmp_path):
    root, source, top = tree
    secret = tmp_path / "secret"
    secret.write_bytes(b"not part of the source")
    (root / "file0.bin").unlink()
    (root / "file0.bin").symlink_to(secret)
    with pytest.raises(SourceChanged, match=r"^no longer a regular file$"):
        source.open(f"{top}/file0.bin")
    assert source.identity(f"{top}/file0.bin") is None


class _SwappingTree(SftpTree):
    """An SftpTree that, right after its next call to the server, really swaps ``victim``
    for a symlink to ``target``: the race between checking a file and opening it."""

    victim: Path | None = None
    target: Path | None = None

    def _call(self, what, fn, **kwargs):  # type: ignore[no-untyped-def]
        result = super()._call(what, fn, **kwargs)
        if self.victim is not None and self.target is not None:
            self.victim.unlink()
            self.victim.symlink_to(self.target)
            self.victim = None
        return result


def test_file_swapped_for_a_symlink_while_opened_is_refused(sshd, tmp_path):
    root = make_tree(tmp_path / "remote", seed=42, files=5)
    secret = tmp_path / "secret"
    secret.write_bytes(b"not part of the source")
    with _SwappingTree(spec_for(sshd.url(root))) as source:
        out, _ = scanned(source)
        path = f"/{sshd.host}{root}/file0.bin"
        i = rows(out)[path]
        source.victim, source.target = root / "file0.bin", secret
        with pytest.raises(SourceChanged, match="changed while being opened"):
            source.open(path)
        assert (root / "file0.bin").is_symlink()
        (root / "file0.bin").unlink()
        (root / "file0.bin").write_bytes(b"x" * out.size[i])  # a regular file again
        with source.open(path) as reader:
            assert reader.readinto(0, memoryview(bytearray(3))) == min(3, out.size[i])


def test_missing_file_and_paths_outside_the_source(tree):
    root, source, top = tree
    (root / "file0.bin").unlink()
    with pytest.raises(SourceError, match=r"^open: no such file$") as info:
        source.open(f"{top}/file0.bin")
    assert not isinstance(info.value, SourceChanged)
    assert source.identity(f"{top}/file0.bin") is None
    for outside in ("/etc/passwd", f"{top}/../x", f"{top}x/file1.bin", top[: top.index("/", 1)]):
        with pytest.raises(SourceError, match="not in the source"):
            source.open(outside)


class _RemovingEntries(Entries):
    """An Entries table that really removes a directory from the disk as soon as the
    scan records it: the directory is gone when the scan comes to list it."""

    def __init__(self, victim: Path, recorded: str) -> None:
        super().__init__()
        self.victim, self.recorded = victim, os.fsencode(recorded)

    def append(self, path: bytes, *args, **kwargs) -> int:  # type: ignore[override]
        if path == self.recorded:
            self.victim.rmdir()
        return super().append(path, *args, **kwargs)


def test_missing_root_raises_and_a_vanished_directory_is_reported(sshd, tmp_path):
    missing = open_source(spec_for(sshd.url(tmp_path / "nothing")))
    with missing, pytest.raises(SourceError, match="no such file"):
        scanned(missing)
    root = make_tree(tmp_path / "r", seed=5, files=5)
    (root / "gone").mkdir()
    (root / "zz").mkdir()
    (root / "zz" / "after").write_bytes(b"still scanned")
    top = f"/{sshd.host}{root}"
    out = _RemovingEntries(root / "gone", f"{top}/gone")
    errors: list[tuple[str, str]] = []
    with open_source(spec_for(sshd.url(root))) as source:
        source.scan(out, 0, lambda path, reason: errors.append((path, reason)))
    assert errors == [(f"{top}/gone", "list: no such file")]
    assert f"{top}/zz/after" in rows(out)  # the scan went on


def test_a_directory_with_a_name_that_is_not_utf8_is_reported(sshd, tmp_path):
    root = make_tree(tmp_path / "r", seed=6, files=5)
    (root / "odd").mkdir()
    (root / "odd" / "ok").write_bytes(b"1")
    with open(os.fsencode(root / "odd") + b"/bad\xff", "wb") as fh:
        fh.write(b"2")
    (root / "zz").mkdir()
    (root / "zz" / "after").write_bytes(b"still scanned")
    top = f"/{sshd.host}{root}"
    with open_source(spec_for(sshd.url(root))) as source:
        out, errors = scanned(source)
    assert [p for p, _ in errors] == [f"{top}/odd"]
    assert errors[0][1] == "list: a name that is not UTF-8: b'bad\\xff'"
    got = rows(out)
    assert f"{top}/odd" in got and f"{top}/zz/after" in got  # the scan went on


def test_connection_is_lazy_closed_and_made_again(tree):
    root, source, top = tree
    assert source.sftp is None  # nothing connects before the first use
    assert source.identity(f"{top}/file0.bin") is not None
    source.close()
    assert source.sftp is None
    with source.open(f"{top}/file0.bin") as reader:
        buf = bytearray(10)
        assert reader.readinto(0, memoryview(buf)) == min(10, (root / "file0.bin").stat().st_size)


def _kill_sessions(server: SshServer) -> None:
    """SIGKILL every session sshd forked (sshd itself keeps listening); return once dead."""
    assert server.proc is not None
    for pid in process_tree(server.proc.pid)[1:]:
        fd = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 10)  # readable when the process has exited
        finally:
            os.close(fd)


def _lose_connection(server: SshServer, source: SftpTree) -> None:
    """Kill the source's session on the server; return once the client has seen it end."""
    transport = source.ssh.get_transport() if source.ssh else None
    assert transport is not None and transport.is_active()
    _kill_sessions(server)
    transport.join(10)  # the transport's thread ends with the connection


# paramiko's readv sends from a thread of its own: a send on the closed connection would
# print that thread's traceback to the user's terminal
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_lost_connection_fails_the_open_file_and_is_made_again(tmp_path):
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("needs root and OpenSSH sshd")
    root = make_tree(tmp_path / "remote", seed=43, files=5, big=(2_000_000,))
    data = (root / "big0.bin").read_bytes()
    with SshServer(tmp_path / "ssh") as server, open_source(spec_for(server.url(root))) as source:
        assert isinstance(source, SftpTree)
        top = f"/{server.host}{root}"
        buf = bytearray(1 << 16)
        assert source.identity(f"{top}/big0.bin") is not None  # connected
        _lose_connection(server, source)
        # nothing was open on the lost connection: the open is made again on a new one
        with source.open(f"{top}/big0.bin") as reader:
            assert reader.readinto(0, memoryview(buf)) == len(buf)
            assert bytes(buf) == data[: len(buf)]
            _lose_connection(server, source)
            # the open file was the old connection's: this file fails, and is not "changed"
            with pytest.raises(SourceError, match=r"^read: connection lost") as info:
                reader.readinto(len(buf), memoryview(buf))
            assert not isinstance(info.value, SourceChanged)
        with source.open(f"{top}/big0.bin") as reader:  # the next file reads again
            assert reader.readinto(len(buf), memoryview(buf)) == len(buf)
        assert bytes(buf) == data[len(buf) : 2 * len(buf)]


def test_host_key_checks_are_the_devices(sshd, tmp_path, monkeypatch):
    known = tmp_path / "kh"
    url = f"sftp://root@{sshd.host}:{sshd.port}{tmp_path}?identity={sshd.identity}&known_hosts={known}"
    monkeypatch.delenv(ACCEPT_NEW_HOST_KEYS_ENV, raising=False)
    refused = open_source(spec_for(url))
    with refused, pytest.raises(SourceError, match=r"unknown host key.*--accept-new-host-keys"):
        scanned(refused)
    assert not known.exists()
    monkeypatch.setenv(ACCEPT_NEW_HOST_KEYS_ENV, "1")
    with open_source(spec_for(url)) as source:
        out, errors = scanned(source)
    assert out.path(0) == f"/{sshd.host}{tmp_path}" and errors == []
    assert Path(known).read_text().split()[1:] == sshd.host_key_line.split()[1:]


def test_options_the_source_does_not_use_are_usage_errors():
    base = "sftp://root@127.0.0.1:22/srv"
    with pytest.raises(UsageError, match=r"unknown option capacity for a sftp source \(known: "):
        open_source(spec_for(f"{base}?identity=/k&capacity=1G"))
    with pytest.raises(UsageError, match="bad option value"):
        open_source(spec_for(f"{base}?timeout=soon"))
    open_source(spec_for(f"{base}?identity=/k&known_hosts=/kh&timeout=5")).close()
