"""Helpers for tests that kill runs at known points and then weigh what the devices hold.

``pause_point`` turns the ``faulty+`` device's pause signal (``GATE.paused``) into a
FIFO, so the test learns that a run reached its pause by a blocking ``open`` returning
(a real event, no polling); ``device_garbage`` measures, volume by volume, the bytes on
directory devices that no live set needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import SRC
from parbackup.catalog import open_catalog
from parbackup.catalog.liveness import FRAMING_SLACK, set_of_volume
from parbackup.format import end_record, read_volume_header

END_SIZE = len(end_record(bytes(16), 0).encode())


def pause_point(gate: Path) -> Path:
    """Make ``GATE.paused`` a FIFO; the faulty device opens it when it pauses."""
    fifo = Path(f"{gate}.paused")
    os.mkfifo(fifo)
    return fifo


def wait_paused(proc: subprocess.Popen, fifo: Path, timeout: float = 120) -> bool:
    """Block until ``proc`` pauses (opens ``fifo``) or exits: True if it paused."""
    got: list[int] = []
    event = threading.Event()

    def reader() -> None:
        got.append(os.open(fifo, os.O_RDONLY))  # returns once the writer opens it
        event.set()

    def waiter() -> None:
        proc.wait()
        event.set()

    threads = [threading.Thread(target=f, daemon=True) for f in (reader, waiter)]
    for t in threads:
        t.start()
    event.wait(timeout)
    if not got:  # the run ended (or hung) without pausing: release the reader
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        threads[0].join(10)
        paused = False
    else:
        paused = True
    for fd in got:
        os.close(fd)
    return paused


def volumes_on(devs: list[Path]) -> dict[tuple[Path, str], int]:
    """(device dir, volume name) -> size, for every file under ``sets/``."""
    out = {}
    for d in devs:
        for path in (d / "sets").rglob("*"):
            if path.is_file():
                out[(d, str(path.relative_to(d)))] = path.stat().st_size
    return out


def device_garbage(devs: list[Path], cat: str) -> dict[str, int]:
    """Volume -> bytes no live set needs, for volumes holding more than FRAMING_SLACK.

    (A partly live volume is compacted only when more than that is dead in it: copying a
    large volume to win a few KiB of directory records is not worth it.)

    A root or pinned set's own volumes count as needed whole (a restorable set's, a
    running run's, and the sets it reads from: what it resumed and what that points
    into); any other volume needs its header, the live records lying in
    it (records root sets list, each once) and its end record. Computed from the catalog
    rows and the files themselves, independently of the engine's reclaim plan.
    """
    with open_catalog(cat) as catalog:  # a SQLite file or a postgresql:// URL
        root_ids = catalog.root_ids()
        whole = root_ids | catalog.pinned_ids()
        labels = {}
        for d in devs:
            labels[d] = _label_of(d)
        live: dict[tuple[str, str], dict[int, int]] = {}
        for set_id in root_ids:
            for _fid, ref in catalog.records(set_id):
                live.setdefault((ref.label, ref.volume), {})[ref.position] = (
                    ref.header_size + ref.size
                )
    out = {}
    for (d, name), size in volumes_on(devs).items():
        set_id = set_of_volume(name)
        if set_id in whole:
            continue
        records = live.get((labels[d], name), {})
        need = (_header_length(d / name) + sum(records.values()) + END_SIZE) if records else 0
        if size - need > (FRAMING_SLACK if records else 0):
            out[f"{d.name}/{name}"] = size - need
    return out


def device_usage(devs: list[Path]) -> int:
    return sum(volumes_on(devs).values())


def _label_of(d: Path) -> str:
    return json.loads((d / "label.json").read_text())["label"]


def _header_length(path: Path) -> int:
    with open(path, "rb") as fh:
        return read_volume_header(fh).length


KILLED_RUN = """
import sys
from parbackup.catalog import Catalog
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup

with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog,
               BackupOptions(checkpoint_bytes=256 << 10, chunk=128 << 10))
"""
"""A backup with small checkpoints and chunks: argv catalog, tree, device URLs."""


def killed_run(
    tmp_path: Path,
    n: int,
    cat: str,
    tree: Path,
    devs: list[Path],
    at: str,
    script: str = KILLED_RUN,
) -> bool:
    """Run ``script`` (a backup) pausing on every device after ``at`` bytes; SIGKILL it
    there. True if it paused (False: it ended first)."""
    gate = tmp_path / f"gate{n}"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{d}?pause_after={at}&gate={gate}" for d in devs]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", script, cat, str(tree), *urls], env=env)
    try:
        paused = wait_paused(proc, fifo)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return paused
