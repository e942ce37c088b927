"""A backup onto a disk that is not mounted (session 18).

With the disk not mounted, its mount point is an empty directory of the file system
underneath (usually the root file system). A backup labelled a new device there and
wrote the set onto that file system, which then filled, or the set was hidden once the
disk was mounted over it. A directory that fstab says a disk is mounted on (it, or a
directory between it and the mount point of the file system it is on now) is now
refused as a new device while nothing is mounted there; ``?allow_unmounted=1`` says to
use it as it is. A real tmpfs and a real fstab-format file (``PARBACKUP_FSTAB``).
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_tree, run_cli
from fsfixtures import require_root, sh, tmpfs_fixture, unmount  # noqa: F401 (fixture)


def test_a_new_device_where_a_disk_is_not_mounted_is_refused(tmp_path: Path) -> None:
    require_root("mount", "umount")
    src = make_tree(tmp_path / "src", seed=3, files=4, max_size=20_000)
    disk = tmp_path / "backup disk"  # fstab writes the space as \040
    disk.mkdir()
    fstab = tmp_path / "fstab"
    escaped = str(disk).replace(" ", "\\040")
    fstab.write_text(
        "# a comment\nUUID=0000 /  ext4 defaults 0 1\n"
        f"LABEL=backup {escaped} ext4 noauto,nofail 0 2\n/swapfile none swap sw 0 0\n"
    )
    env = {"PARBACKUP_FSTAB": str(fstab)}
    cat = str(tmp_path / "cat.sqlite")
    below = disk / "parbackup"  # made by hand on the root file system, too
    below.mkdir()
    for dev in (disk, below):
        r = run_cli("backup", str(src), "-d", str(dev), "--catalog", cat, env=env)
        assert r.code == 1, r.out + r.err
        assert f"no disk is mounted on {disk} (a mount point in {fstab})" in r.err
        assert "add ?allow_unmounted=1" in r.err
    assert [p.name for p in disk.rglob("*")] == ["parbackup"]  # nothing written underneath

    sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk))
    try:
        (disk / "parbackup").mkdir()
        r = run_cli("backup", str(src), "-d", str(below), "--catalog", cat, env=env)
        assert r.code == 0, r.out + r.err
        assert (below / "label.json").exists()
    finally:
        unmount(disk)
    assert [p.name for p in disk.rglob("*")] == ["parbackup"]  # the set is on the disk

    # the mounted disk's device, unmounted again, is not replaced by a new one underneath
    r = run_cli("backup", str(src), "-d", str(below), "--catalog", cat, env=env)
    assert r.code == 1 and "no disk is mounted on" in r.err, r.out + r.err
    # told to, it backs up onto the directory as it is
    r = run_cli("backup", str(src), "-d", f"{below}?allow_unmounted=1", "--catalog", cat, env=env)
    assert r.code == 0, r.out + r.err
    assert (below / "label.json").exists()
    r = run_cli("backup", str(src), "-d", f"{below}?allow_unmounted=yes", "--catalog", cat)
    assert r.code == 2 and "allow_unmounted is 0 or 1" in r.err, r.out + r.err


def test_a_directory_on_a_mounted_disk_or_not_in_fstab_is_labelled(tmp_path: Path, tmpfs) -> None:
    """No false alarm: fstab's mount point mounted, or the directory under none of them."""
    src = make_tree(tmp_path / "src", seed=4, files=3, max_size=10_000)
    disk = tmpfs("disk", "16m")
    other = tmp_path / "other"
    other.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"tmpfs {disk} tmpfs defaults 0 0\ntmpfs {tmp_path}/gone tmpfs defaults 0 0\n")
    env = {"PARBACKUP_FSTAB": str(fstab)}
    r = run_cli(
        "backup",
        str(src),
        "-d",
        str(disk),
        "-d",
        str(other),
        "--catalog",
        str(tmp_path / "c"),
        env=env,
    )
    assert r.code == 0, r.out + r.err
