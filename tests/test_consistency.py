"""Without a snapshot, a file that changes while it is read is reported inconsistent (F4)."""

from __future__ import annotations

import os
import threading

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions
from parbackup.progress import Started
from parbackup.readback.restore import RestoreOptions, run_restore


def test_file_changing_during_backup_is_inconsistent(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=2, files=8)
    hot = tree / "hot.log"
    hot.write_bytes(os.urandom(4 << 20))
    devs = [str(d) for d in device_dirs(2)]
    stop = threading.Event()

    def scribble() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            with open(hot, "r+b") as fh:
                fh.seek(n * 4096 % (4 << 20))
                fh.write(os.urandom(4096))
            os.utime(hot, ns=(n, n))  # a distinct mtime on every write
            stop.wait(0.001)

    def on_event(event) -> None:
        if isinstance(event, Started):  # after the scan, before any byte is read
            with open(hot, "ab") as fh:
                fh.write(b"more")
            threading.Thread(target=scribble, daemon=True).start()

    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        try:
            report = run_backup([str(tree)], devs, cat, BackupOptions(chunk=64 << 10), on_event)
        finally:
            stop.set()
        assert report.status == "complete"
        assert [s.path for s in report.inconsistent] == [str(hot)]
        error = report.inconsistent[0].error
        assert error.startswith("file changed while being read (") and "mtime" in error
        assert report.exit_code == 3
        assert report.to_json()["inconsistent"] == [{"path": str(hot), "error": error}]
        assert str(hot) not in [s.path for s in report.skipped]
        states = {f.entry.path: f.state for f in cat.files(report.set_id)}
        assert states[str(hot)] == "inconsistent"
        assert {s for p, s in states.items() if p != str(hot)} == {"ok"}
        out = tmp_path / "out"
        restored = run_restore(cat, RestoreOptions(target=str(out)))
        assert restored.exit_code == 0
        assert not (out / str(hot).lstrip("/")).exists()  # never handed back as good
        assert (out / str(tree / "file0.bin").lstrip("/")).exists()
