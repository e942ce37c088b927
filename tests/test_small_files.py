"""Small files go through the mover's fast path (``Source.read_whole``); one that is not
as the scan saw it falls back to the general path, which reports it exactly as before:
rewritten -> inconsistent, only grown -> kept as read with a warning (F4)."""

from __future__ import annotations

import os

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
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
