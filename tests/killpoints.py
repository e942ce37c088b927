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


TOLD = """
import os
from parbackup.catalog import Catalog as _Catalog


class Catalog(_Catalog):
    # the real catalog, which also tells the test (a line with the device's label on
    # the pipe TOLD_FD) each time a mover's durable records were committed to it
    def add_record_columns(self, set_id, label, columns):
        super().add_record_columns(set_id, label, columns)
        if len(columns[0]):  # a mover's records (recordrows.py), not reused ones
            os.write(int(os.environ["TOLD_FD"]), label.encode() + b"\\n")
"""
"""Script prelude: a ``Catalog`` that tells ``killed_run`` what reached it. The engine
commits a device's ``Durable`` records when it gets to them, not when the device paused:
a kill at the first pause found none of one device's committed, under load (the faulty
device cannot know; an observer of the real catalog, not a mock of it)."""

KILLED_RUN = (
    TOLD
    + """
import sys
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup

with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog,
               BackupOptions(checkpoint_bytes=256 << 10, chunk=128 << 10))
"""
)
"""A backup with small checkpoints and chunks: argv catalog, tree, device URLs."""

DURABLE_BATCHES = 3
"""Checkpoints of each device that ``killed_run`` sees committed to the catalog before
it kills: at 256 KiB each, several whole files per device (each pauses after 2 MiB, so
it makes about 7 before it pauses, and every one reaches the catalog in the end)."""


def killed_run(
    tmp_path: Path,
    n: int,
    cat: str,
    tree: Path,
    devs: list[Path],
    at: str,
    script: str = KILLED_RUN,
    batches: int = DURABLE_BATCHES,
    told_by: int = 0,
) -> bool:
    """Run ``script`` (a backup that opens its catalog as ``TOLD``'s ``Catalog``) pausing
    on every device after ``at`` bytes; SIGKILL it once a device paused there AND the
    catalog holds ``batches`` checkpoints of every device (of ``told_by`` devices, if
    given: one that writes a single large file makes none before it pauses). Two real
    events, so what the kill leaves does not depend on how far the controller got under
    load. True if so; False if the run ended first (or made fewer checkpoints)."""
    gate = tmp_path / f"gate{n}"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{d}?pause_after={at}&gate={gate}" for d in devs]
    told, told_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": SRC, "TOLD_FD": str(told_w)}
    args = [sys.executable, "-c", script, cat, str(tree), *urls]
    proc = subprocess.Popen(args, env=env, pass_fds=(told_w,))
    os.close(told_w)
    reader = None
    try:
        paused = wait_paused(proc, fifo)
        if paused:
            paused, reader = wait_told(told, told_by or len(devs), batches)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # closed only now: closed while the run could still write, the pipe would make
        # its next line an EPIPE in the controller, which might fail the run before the
        # kill came; the run's end is the pipe's end, which the reader sees at once
        if reader is not None:
            reader.join(10)
        os.close(told)
    return paused


def wait_told(
    told: int, devices: int, batches: int, timeout: float = 120
) -> tuple[bool, threading.Thread]:
    """Read labels from the pipe ``told`` until ``devices`` labels came ``batches`` times
    each: True then; False at its end (the run ended) or after ``timeout`` seconds. A
    reader thread reads ``told`` (returned, to be joined once the run is over); the
    caller closes ``told`` after that, never while the run may still write to it."""
    counts: dict[bytes, int] = {}
    done = threading.Event()

    def enough() -> bool:
        return len(counts) >= devices and min(counts.values()) >= batches

    def reader() -> None:
        with open(told, "rb", closefd=False) as stream:
            for line in stream:
                counts[line] = counts.get(line, 0) + 1
                if enough():
                    break
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    done.wait(timeout)
    return enough(), thread


def change_a_file_held_whole(cat: str, tree: Path) -> str:
    """Invert the bytes of a file that the newest set (a killed run) holds whole in one
    of its own volumes, next to other files it holds whole there; its path in ``tree``.

    The next backup of ``tree`` reuses those others and writes that one anew: its records
    in the volume (more than FRAMING_SLACK) are dead and the rest live, so the volume is
    partly live, which prune must compact whatever the kill left after the records. The
    file is picked from what the catalog says, not guessed from the order the run wrote
    in (the controller commits what a device made durable when it gets to it)."""
    with open_catalog(cat) as catalog:
        killed = catalog.sets()[-1].id
        files = {f.file_id: f.entry for f in catalog.files(killed)}
        held: dict[tuple[str, str], dict[int, list[int]]] = {}  # volume: file: [bytes, size]
        for fid, ref in catalog.records(killed):
            if set_of_volume(ref.volume) == killed:
                got = held.setdefault((ref.label, ref.volume), {}).setdefault(fid, [0, 0])
                got[0] += ref.header_size + ref.size
                got[1] += ref.size
    whole = {
        volume: {fid: got[0] for fid, got in in_it.items() if got[1] == files[fid].size > 0}
        for volume, in_it in held.items()
    }
    choices = sorted(
        (n, -fid, volume)
        for volume, in_it in whole.items()
        for fid, n in in_it.items()
        if len(in_it) >= 2 and n > FRAMING_SLACK
    )
    assert choices, (
        "the killed run's catalog holds no volume with two whole files, one of them more"
        f" than {FRAMING_SLACK} bytes: nothing to make a partly live volume of ({whole})"
    )
    _n, fid, _volume = choices[-1]
    path = Path(files[-fid].path)
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))
    return str(path.relative_to(tree))
