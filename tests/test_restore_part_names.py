"""Files named like restore's temporary names restore like any other.

Restore writes each file into ``.parbackup-<file id>.part`` next to its destination and
renames it into place. A set holding entries of that very name (a killed restore's
leftovers backed up since, or names made on purpose) lost files: one entry's ``.part``
took the place of another entry, or was renamed over by it, so restore said every entry
was restored (exit 0) while some were missing or held another file's bytes. The
``.part`` names now carry a tag no entry of the restore ends with (readback/sinks.py
``part_tag``).
"""

from __future__ import annotations

import os

import pytest

from conftest import restored_root, run_cli, snapshot


@pytest.mark.slow
def test_entries_named_like_part_files_are_all_restored(tmp_path, device_dirs):
    src = tmp_path / "src"
    sub = src / "sub"
    sub.mkdir(parents=True)
    for d in (src, sub):
        for i in range(40):  # every file id of this small set is taken by a name
            (d / f".parbackup-{i}.part").write_bytes(f"{d.name} entry {i}\n".encode())
        (d / ".parbackup-3~1.part").write_bytes(b"and the first tag too\n")
        (d / "big").write_bytes(os.urandom(3 << 20))  # split over both devices
        (d / "small").write_bytes(os.urandom(5000))  # whole on one
    os.symlink(".parbackup-5.part", sub / ".parbackup-41.part")
    (sub / ".parbackup-42.part").mkdir()
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *devs, "--catalog", cat, "--strategy", "threshold")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    # a second restore of one directory only (another selection, another tag maybe)
    out2 = tmp_path / "out2"
    r = run_cli("restore", "--target", str(out2), "--catalog", cat, "--include", str(sub))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out2, sub)) == snapshot(sub)
