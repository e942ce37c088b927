"""Without a snapshot, a file that changes while it is read is reported inconsistent (F4)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from conftest import make_tree
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions
from parbackup.progress import Started
from parbackup.readback.restore import RestoreOptions, run_restore


def test_file_changing_during_backup_is_inconsistent(tmp_path):
    """The file is rewritten at its start and appended to while it is being read (the
    device pauses the mover in the middle of it): it is inconsistent, never restored."""
    tree = make_tree(tmp_path / "src", seed=2, files=8)
    hot = tree / "hot.log"
    hot.write_bytes(os.urandom(4 << 20))  # the largest file: the device's first item
    dev = tmp_path / "dev"
    dev.mkdir()
    gate = tmp_path / "gate"
    devs = [f"faulty+file://{dev}?pause_after=1M&gate={gate}"]
    out: dict = {}
    catalog = str(tmp_path / "cat.sqlite")

    def backup() -> None:
        with Catalog(catalog) as cat:
            out["report"] = run_backup([str(tree)], devs, cat, BackupOptions(chunk=64 << 10))

    thread = threading.Thread(target=backup)
    thread.start()
    paused = Path(f"{gate}.paused")
    deadline = time.monotonic() + 60
    while not paused.exists():  # the mover is a megabyte into hot.log
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    with open(hot, "r+b") as fh:  # its beginning, already read, changes; it grows
        fh.write(os.urandom(4096))
        fh.seek(0, os.SEEK_END)
        fh.write(b"more")
    gate.touch()
    thread.join(120)
    report = out["report"]
    with Catalog(catalog) as cat:
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
        assert restored.exit_code == 3  # named, not dropped silently
        assert [d["path"] for d in restored.skipped] == [str(hot)]
        assert not (out / str(hot).lstrip("/")).exists()  # never handed back as good
        assert (out / str(tree / "file0.bin").lstrip("/")).exists()


def test_a_log_appended_to_while_read_is_kept_as_read(tmp_path, device_dirs):
    """A file that only grew (a live log) is stored as it was read, up to the size the
    scan saw, flagged, and restored with a warning. (One whose beginning changes while
    it is read is inconsistent: the test above; the mover reads the kept part again to
    tell the two apart.)"""
    tree = make_tree(tmp_path / "src", seed=5, files=6)
    log = tree / "app.log"
    first = os.urandom(3 << 20)
    log.write_bytes(first)
    devs = [str(d) for d in device_dirs(2)]

    def on_event(event) -> None:
        if isinstance(event, Started):  # after the scan, before a byte is read
            with open(log, "ab") as fh:
                fh.write(b"a new line\n" * 100)

    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(tree)], devs, cat, on_event=on_event)
        assert report.status == "complete" and report.exit_code == 3
        assert [s.path for s in report.grown] == [str(log)]
        assert "3145728 bytes kept" in report.grown[0].error
        assert report.inconsistent == []
        assert report.to_json()["grown"][0]["path"] == str(log)
        out = tmp_path / "out"
        restored = run_restore(cat, RestoreOptions(target=str(out)))
    assert restored.exit_code == 3 and [g["path"] for g in restored.grown] == [str(log)]
    back = out / str(log).lstrip("/")
    assert back.read_bytes() == first  # what was read: the size the scan saw
