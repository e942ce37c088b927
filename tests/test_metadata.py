"""Full metadata on real file systems (REQUIREMENTS E3, issue 13): extended attributes,
POSIX ACLs, file capabilities and ownership survive a backup and restore (and a catalog
rebuilt from the devices); a target that cannot take them gets the data and a report of
what was left out (exit 3); the per-file bound; incremental backups see a change of
metadata only.

Checked with the system's own tools (getfacl, getcap) as well as the raw attributes.
Needs root (loop devices, mounts, capabilities, chown).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli
from fsfixtures import ext4_fixture, require_root, sh, tmpfs_fixture, unmount  # noqa: F401
from parbackup.format import checksum, iter_volume, read_volume_header
from parbackup.xattrs import MAX_META

pytestmark = pytest.mark.slow

CAP_NET_RAW = "cap_net_raw=ep"


def xattrs_of(path: Path) -> dict[str, bytes]:
    """Every extended attribute of ``path`` itself (a symlink is not followed)."""
    return {
        n: os.getxattr(path, n, follow_symlinks=False)
        for n in os.listxattr(path, follow_symlinks=False)
    }


def tool(*args: str) -> str:
    return sh(*args).stdout


def acl_text(path: Path) -> str:
    """getfacl's numeric listing without the header (the path differs)."""
    return tool("getfacl", "-c", "-n", "-p", str(path))


def build_tree(root: Path) -> Path:
    """A tree with every kind of metadata: user/trusted attributes (an empty value too), an
    SELinux label (stored as any attribute without SELinux in the kernel),
    a capability on a file given away to another owner, access and default ACLs, an
    attribute on a symlink itself."""
    require_root("setfacl", "getfacl", "setcap", "getcap")
    (root / "d").mkdir(parents=True)
    (root / "plain.txt").write_bytes(b"no metadata\n")
    f = root / "f.txt"
    f.write_bytes(b"hello with attributes\n")
    os.setxattr(f, "user.color", b"blue")
    os.setxattr(f, "user.empty", b"")
    os.setxattr(f, "trusted.note", b"\x00\x01binary\xff")
    os.setxattr(f, "security.selinux", b"system_u:object_r:user_home_t:s0\0")  # a label
    tool_file = root / "ping"
    tool_file.write_bytes(b"#!/bin/sh\n")
    tool_file.chmod(0o755)
    os.chown(tool_file, 4321, 4322)  # given away first: chown clears a capability
    tool("setcap", "cap_net_raw+ep", str(tool_file))
    g = root / "d" / "g.txt"
    g.write_bytes(b"shared\n")
    os.chown(g, 1234, 1235)
    tool("setfacl", "-m", "u:1234:rw,g:77:r", str(g))
    # made before the default ACL: it has none; restore must not let it inherit one
    (root / "d" / "before-default.txt").write_bytes(b"no acl\n")
    tool("setfacl", "-m", "u:1234:rwx", str(root / "d"))
    tool("setfacl", "-d", "-m", "u:1234:r-x,g:77:rx", str(root / "d"))
    os.setxattr(root / "d", "user.dir", b"1")
    os.symlink("f.txt", root / "link")
    os.setxattr(root / "link", "trusted.onlink", b"L", follow_symlinks=False)
    return root


def check_same(src: Path, out: Path) -> None:
    """Data, owner, mode, attributes, ACLs and capabilities of ``out`` equal ``src``'s."""
    for rel in ("plain.txt", "f.txt", "ping", "d", "d/g.txt", "d/before-default.txt", "link"):
        a, b = src / rel, out / rel
        sa, sb = a.lstat(), b.lstat()
        assert (sb.st_mode, sb.st_uid, sb.st_gid) == (sa.st_mode, sa.st_uid, sa.st_gid), rel
        assert xattrs_of(b) == xattrs_of(a), rel
        if a.is_file() and not a.is_symlink():
            assert b.read_bytes() == a.read_bytes(), rel
        if not a.is_symlink():
            assert acl_text(b) == acl_text(a), rel
    assert CAP_NET_RAW in tool("getcap", str(out / "ping"))
    assert "user:1234:r-x" in tool("getfacl", "-n", "-d", "-p", str(out / "d"))
    assert "user:1234:rw-" in acl_text(out / "d/g.txt")


def meta_records(devices: list[Path]) -> dict[bytes, tuple[int, bytes]]:
    """Path -> (record version, payload) of every kind-8 record on the devices."""
    found = {}
    for volume in sorted(p for d in devices for p in d.glob("sets/*/*.pbv")):
        raw = volume.read_bytes()
        with open(volume, "rb") as stream:
            start = read_volume_header(stream).length
            for position, header, payload in iter_volume(stream, start):
                if header.kind == "meta":
                    (version,) = struct.unpack_from("<H", raw, position + 4)
                    found[header.path] = (version, payload)
    return found


def backup(src: Path, devices: list[Path], catalog: Path, *more: str):
    for d in devices:
        d.mkdir(exist_ok=True)
    args = [a for d in devices for a in ("-d", str(d))]
    return run_cli("backup", str(src), *args, "--catalog", str(catalog), "--json", *more)


def test_attributes_acls_capabilities_and_owners_round_trip_on_ext4(ext4, tmp_path):
    src = build_tree(ext4("src") / "tree")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    catalog = tmp_path / "catalog.sqlite"
    r = backup(src, devices, catalog)
    assert r.code == 0, r.err
    target = ext4("dst")
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(target), "--json")
    assert r.code == 0, r.out + r.err
    check_same(src, restored_root(target, src))

    # every entry with attributes has its kind-8 record (record version 3) on a device
    records = meta_records(devices)
    with_meta = {"f.txt", "ping", "d", "d/g.txt", "link"}
    assert {os.fsdecode(p) for p in records} == {str(src / n) for n in with_meta}
    assert {v for v, _p in records.values()} == {3}

    # a catalog rebuilt from the devices alone restores them too
    rebuilt = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *[a for d in devices for a in ("-d", str(d))],
                "--catalog", str(rebuilt))  # fmt: skip
    assert r.code == 0, r.err
    again = target / "again"
    r = run_cli("restore", "--catalog", str(rebuilt), "--target", str(again))
    assert r.code == 0, r.out + r.err
    check_same(src, restored_root(again, src))


@pytest.fixture(name="ramfs")
def ramfs_fixture(tmp_path: Path):
    """A ramfs: a file system that takes no extended attributes at all (vfat cannot be
    mounted on this kernel; ramfs refuses every attribute the same way)."""
    require_root("mount", "umount")
    path = tmp_path / "ramfs"
    path.mkdir()
    sh("mount", "-t", "ramfs", "ramfs", str(path))
    yield path
    unmount(path)


def test_a_target_without_extended_attributes_gets_the_data_and_a_report(ramfs, tmp_path):
    src = build_tree(tmp_path / "src")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    catalog = tmp_path / "catalog.sqlite"
    assert backup(src, devices, catalog).code == 0
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(ramfs), "--json")
    assert r.code == 3, r.out + r.err
    listed = run_cli("files", "--catalog", str(catalog), "--json").json["files"]
    assert {f["path"]: f.get("xattrs") for f in listed}[str(src / "ping")] == [
        "security.capability"
    ]
    out = restored_root(ramfs, src)
    for rel in ("plain.txt", "f.txt", "ping", "d/g.txt"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
        assert (out / rel).stat().st_uid == (src / rel).stat().st_uid  # root: chown works
    assert os.readlink(out / "link") == "f.txt"
    left = {d["path"]: d for d in r.json["left_out"]}
    assert set(left) == {str(src / n) for n in ("f.txt", "ping", "d", "d/g.txt", "link")}
    assert left[str(src / "f.txt")]["left_out"] == [
        "security.selinux",
        "trusted.note",
        "user.color",
        "user.empty",
    ]
    assert left[str(src / "ping")]["left_out"] == ["security.capability"]
    assert "system.posix_acl_default" in left[str(src / "d")]["left_out"]
    assert "does not support" in left[str(src / "d/g.txt")]["error"]
    # the text report names each of them too
    text = run_cli("restore", "--catalog", str(catalog), "--target", str(ramfs / "t"))
    assert text.code == 3
    assert f"warning: {src / 'ping'}: left out security.capability" in text.err + text.out


def test_attributes_over_the_bound_are_left_out_with_a_warning(tmpfs, tmp_path):
    src = tmpfs("src", "8m")
    big, small = src / "big.bin", src / "small.bin"
    big.write_bytes(b"big attributes\n")
    small.write_bytes(b"small attributes\n")
    os.setxattr(big, "user.a", bytes(MAX_META // 2))
    os.setxattr(big, "user.b", bytes(MAX_META // 2))
    os.setxattr(small, "user.a", b"kept")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    catalog = tmp_path / "catalog.sqlite"
    r = backup(src, devices, catalog)
    assert r.code == 3, r.err
    warned = [s for s in r.json["skipped"] if s["path"] == str(big)]
    assert warned and f"bound {MAX_META}" in warned[0]["error"], r.json["skipped"]
    assert r.json["status"] == "complete"
    assert set(meta_records(devices)) == {os.fsencode(small)}
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(target), "--json")
    assert r.code == 0, r.out + r.err
    out = restored_root(target, src)
    assert (out / "big.bin").read_bytes() == b"big attributes\n"
    assert xattrs_of(out / "big.bin") == {}
    assert xattrs_of(out / "small.bin") == {"user.a": b"kept"}


def test_an_incremental_backup_copies_a_file_whose_attributes_alone_changed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f.bin"
    f.write_bytes(os.urandom(100_000))
    (src / "other.bin").write_bytes(os.urandom(100_000))
    os.setxattr(f, "user.v", b"1")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    catalog = tmp_path / "catalog.sqlite"
    assert backup(src, devices, catalog).code == 0
    mtime = f.stat().st_mtime_ns
    os.setxattr(f, "user.v", b"2")  # ctime changes, mtime and data do not
    assert f.stat().st_mtime_ns == mtime
    r = backup(src, devices, catalog, "--incremental")
    assert r.code == 0, r.err
    assert r.json["reused"] == 100_000  # other.bin's bytes only
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(target))
    assert r.code == 0, r.out + r.err
    assert xattrs_of(restored_root(target, src) / "f.bin") == {"user.v": b"2"}


def test_a_restore_by_another_user_names_the_owner_and_privileged_attributes(tmp_path):
    require_root("setpriv", "setcap")
    # outside pytest's 0700 base directory, so another user can enter it; a fresh name,
    # so two test processes at once never share it
    base = Path(tempfile.mkdtemp(prefix="meta-nonroot-", dir="/tmp"))
    base.chmod(0o755)
    try:
        src = base / "src"
        src.mkdir()
        f = src / "f.txt"
        f.write_bytes(b"data\n")
        os.chown(f, 4321, 4322)
        os.setxattr(f, "user.ok", b"1")
        os.setxattr(f, "trusted.t", b"2")
        mine = src / "mine.txt"  # the restoring user's own read-only file: user.* needs w
        mine.write_bytes(b"mine\n")
        os.setxattr(mine, "user.ok", b"2")
        mine.chmod(0o444)
        os.chown(mine, 65534, 65534)
        devices = [base / "dev1", base / "dev2"]
        catalog = base / "catalog.sqlite"
        assert backup(src, devices, catalog).code == 0
        target = base / "target"
        target.mkdir()
        os.chown(target, 65534, 65534)
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "parbackup", "restore", "--catalog", str(catalog), "--target", str(target),
             "--json"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        r = json.loads(proc.stdout)
        out = restored_root(target, src)
        assert (out / "f.txt").read_bytes() == b"data\n"
        assert xattrs_of(out / "f.txt") == {"user.ok": b"1"}
        assert xattrs_of(out / "mine.txt") == {"user.ok": b"2"}
        assert (out / "mine.txt").stat().st_mode & 0o7777 == 0o444
        left = {d["path"]: d["left_out"] for d in r["left_out"]}
        assert left == {str(f): ["owner 4321:4322", "trusted.t"], str(src): ["owner 0:0"]}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_rebuild_names_a_damaged_meta_record_and_keeps_the_file(tmp_path):
    """A meta record whose checksum holds but whose payload is not a valid encoding (a
    forged or buggy writer): rebuild-catalog names it as damage, the set is degraded,
    and the file restores with its data (without the attributes)."""
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f.txt"
    f.write_bytes(b"payload\n")
    os.setxattr(f, "user.k", b"v")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    assert backup(src, devices, tmp_path / "catalog.sqlite").code == 0
    (volume,) = [v for d in devices for v in d.glob("sets/*/*.pbv") if b"user.k" in v.read_bytes()]
    raw = bytearray(volume.read_bytes())
    with open(volume, "rb") as stream:
        start = read_volume_header(stream).length
        ((position, header, payload),) = [
            r for r in iter_volume(stream, start) if r[1].kind == "meta"
        ]
    forged = b"\x09" + payload[1:]  # an unknown payload version, same length
    at = position + len(header.encode())
    raw[at : at + len(forged)] = forged
    fixed = replace(header, checksum=checksum(forged)).encode()
    raw[position : position + len(fixed)] = fixed
    volume.write_bytes(bytes(raw))
    rebuilt = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *[a for d in devices for a in ("-d", str(d))],
                "--catalog", str(rebuilt), "--json")  # fmt: skip
    assert r.code == 3, r.out + r.err
    (found,) = r.json["sets"]
    assert found["status"] == "degraded"
    assert any("unknown metadata payload version 9" in d["error"] for d in found["damaged"])
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", str(rebuilt), "--target", str(target))
    assert r.code == 0, r.out + r.err
    out = restored_root(target, src) / "f.txt"
    assert out.read_bytes() == b"payload\n" and xattrs_of(out) == {}


def test_attributes_round_trip_through_a_tape_and_a_rebuild_from_it(tmp_path):
    """A tape is read front to back: its meta records pass between the data records a
    restore wants, and rebuild-catalog takes them from the stream."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(6):
        p = src / "d" / f"f{i}.bin"
        p.write_bytes(os.urandom(50_000 * (i + 1)))
        os.setxattr(p, "user.n", str(i).encode())
    tape, disk = tmp_path / "tape1", tmp_path / "disk"
    disk.mkdir()
    catalog = tmp_path / "catalog.sqlite"
    r = run_cli("backup", str(src), "-d", f"tape://{tape}", "-d", str(disk),
                "--catalog", str(catalog))  # fmt: skip
    assert r.code == 0, r.err
    rebuilt = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", "-d", f"tape://{tape}", "-d", str(disk),
                "--catalog", str(rebuilt))  # fmt: skip
    assert r.code == 0, r.out + r.err
    for name, cat in (("direct", catalog), ("rebuilt", rebuilt)):
        target = tmp_path / name
        r = run_cli("restore", "--catalog", str(cat), "--target", str(target))
        assert r.code == 0, r.out + r.err
        out = restored_root(target, src) / "d"
        for i in range(6):
            p = out / f"f{i}.bin"
            assert p.read_bytes() == (src / "d" / f"f{i}.bin").read_bytes()
            assert xattrs_of(p) == {"user.n": str(i).encode()}, (name, i)


def test_a_tree_without_attributes_writes_no_version_3_record(tmpfs, tmp_path):
    """Only meta records carry record version 3: without extended attributes the
    volumes are what version 2 wrote (a version-2 reader reads them)."""
    src = tmpfs("src", "8m")
    (src / "d").mkdir()
    (src / "d" / "f.bin").write_bytes(os.urandom(10_000))
    os.link(src / "d" / "f.bin", src / "hard.bin")
    os.symlink("d/f.bin", src / "link")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    assert backup(src, devices, tmp_path / "catalog.sqlite").code == 0
    versions = set()
    for volume in sorted(p for d in devices for p in d.glob("sets/*/*.pbv")):
        raw = volume.read_bytes()
        with open(volume, "rb") as stream:
            start = read_volume_header(stream).length
            for position, _header, _payload in iter_volume(stream, start):
                versions.add(struct.unpack_from("<H", raw, position + 4)[0])
    assert versions == {1, 2}
