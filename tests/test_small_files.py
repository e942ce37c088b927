"""Small files go through the mover's fast path (``Source.read_whole``); one that is not
as the scan saw it falls back to the general path, which reports it exactly as before:
rewritten -> inconsistent, only grown -> kept as read with a warning (F4)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.moversource import SMALL
from parbackup.engine.rebuild import rebuild_catalog
from parbackup.progress import Started
from parbackup.readback.restore import RestoreOptions, run_restore


def test_small_files_changed_after_the_scan_are_reported_as_the_reader_reports_them(
    tmp_path, device_dirs
):
    tree = make_tree(tmp_path / "src", seed=7, files=12)
    hot, log = tree / "hot.txt", tree / "small.log"
    hot.write_bytes(b"a" * 1000)
    log.write_bytes(b"line\n" * 100)
    kept = log.read_bytes()
    devs = [str(d) for d in device_dirs(2)]

    def on_event(event) -> None:
        if isinstance(event, Started):  # after the scan, before a byte is read
            hot.write_bytes(b"b" * 1000)  # same size, other bytes, a later mtime
            st = os.stat(hot)
            os.utime(hot, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
            with open(log, "ab") as fh:
                fh.write(b"more\n")

    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(tree)], devs, cat, on_event=on_event)
        assert report.status == "complete" and report.exit_code == 3
        assert [s.path for s in report.inconsistent] == [str(hot)]
        assert [s.path for s in report.grown] == [str(log)]
        out = tmp_path / "out"
        restored = run_restore(cat, RestoreOptions(target=str(out)))
    assert [d["path"] for d in restored.skipped] == [str(hot)]
    assert (out / str(log).lstrip("/")).read_bytes() == kept
    for f in tree.iterdir():
        if f not in (hot, log) and f.is_file():
            assert (out / str(f).lstrip("/")).read_bytes() == f.read_bytes()


def test_small_files_read_straight_into_the_gather_buffer_make_whole_records(tmp_path, device_dirs):
    """The mover reads a small file straight into its gather buffer after room for the
    header, which it fills once the bytes are hashed (engine/mover.py ``small_in_place``).
    Files of every small size (1 byte to exactly ``SMALL``, several gather buffers'
    worth, so records straddle each 1 MiB write), one rewritten after the scan (read
    into the buffer, then dropped) and one with extended attributes: a catalog rebuilt
    from the devices alone (every record's header CRC and BLAKE3 checked as it is read)
    must restore every byte, and the changed file's bytes must be written only once."""
    rng = random.Random(11)
    tree = tmp_path / "src"
    (tree / "d").mkdir(parents=True)
    sizes = [1, SMALL, SMALL - 1, SMALL + 1] + [rng.randint(1, SMALL) for _ in range(60)]
    for i, n in enumerate(sizes):
        (tree / "d" / f"f{i:03d}-{'x' * (i % 7) * 20}").write_bytes(rng.randbytes(n))
    hot = tree / "d" / "hot.bin"
    hot.write_bytes(b"h" * 200_000)
    attrs = tree / "d" / "attrs.txt"
    attrs.write_bytes(b"with attributes\n" * 500)
    os.setxattr(attrs, "user.note", b"kept")
    devs = [str(d) for d in device_dirs(2)]

    def on_event(event) -> None:
        if isinstance(event, Started):  # same size, other bytes: dropped once read
            hot.write_bytes(b"H" * 200_000)
            st = os.stat(hot)
            os.utime(hot, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(tree)], devs, cat, on_event=on_event)
        assert [s.path for s in report.inconsistent] == [str(hot)]
    # the changed file's bytes: once, from the general path that then finds it changed;
    # what the fast path had read into the gather buffer was dropped, not written too
    volumes = [v.read_bytes() for d in devs for v in Path(d).rglob("*.pbv")]
    assert sum(v.count(b"H" * 200_000) for v in volumes) == 1
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    assert rebuild_catalog(devs, rebuilt).exit_code == 0
    with Catalog(rebuilt) as cat:
        out = tmp_path / "out"
        run_restore(cat, RestoreOptions(target=str(out)))
    for f in (tree / "d").iterdir():
        if f != hot:
            assert (out / str(f).lstrip("/")).read_bytes() == f.read_bytes(), f
    assert os.getxattr(out / str(attrs).lstrip("/"), "user.note") == b"kept"
