"""A ``.part`` name planted in the target never leads restore's bytes into another file.

Restore writes each file into ``.parbackup-<file id>.part`` next to its destination (the
ids are small numbers, easy to guess) and renames it into place. The target may already
hold that name: a hard link to a file elsewhere (a user's file, or one an attacker can
still read through a descriptor it keeps open). Restore opened the name with
``O_CREAT|O_TRUNC`` (``O_NOFOLLOW`` refuses a symlink, not a hard link): it truncated
the other file, wrote the restored bytes into it, gave it the restored mode and owner,
and renamed it into place, so the file outside the target was destroyed and held the
restored data, with exit 0. A ``.part`` is now always a new file (readback/sinks.py).
"""

from __future__ import annotations

import os

from conftest import restored_root, run_cli

VICTIM = b"a file outside the target, never to be touched\n"


def test_a_planted_part_hard_link_never_receives_restored_bytes(tmp_path, device_dirs):
    src = tmp_path / "src"
    src.mkdir()
    files = {
        "big": os.urandom(3 << 20),  # split over both devices
        "small": os.urandom(5000),  # whole, in one record
        "empty": b"",
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *devs, "--catalog", cat, "--strategy", "threshold")
    assert r.code == 0, r.out + r.err
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    os.chmod(victim, 0o640)
    out = tmp_path / "out"
    here = restored_root(out, src)
    here.mkdir(parents=True)
    for i in range(64):  # every file id of this small set, with and without a tag
        for leaf in (f".parbackup-{i}.part", f".parbackup-{i}~1.part"):
            os.link(victim, here / leaf)
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert victim.read_bytes() == VICTIM
    assert oct(os.stat(victim).st_mode & 0o777) == oct(0o640)
    for name, data in files.items():
        assert (here / name).read_bytes() == data
        assert not os.path.samefile(here / name, victim)


def test_a_planted_mark_hard_link_is_never_written(tmp_path, device_dirs):
    """The restore's mark (``TARGET/.parbackup-restore``, readback/mark.py) was opened
    ``O_RDWR|O_CREAT`` and truncated and written: a hard link planted under its name
    lost the file elsewhere. Such a name is now no mark: restore goes on without one."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"restored\n")
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(1) for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *devs, "--catalog", cat)
    assert r.code == 0, r.out + r.err
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / ".parbackup-restore")
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert victim.read_bytes() == VICTIM
    assert (restored_root(out, src) / "f").read_bytes() == b"restored\n"
