"""The readback core (src/parbackup/readback): reader processes, interruption, full targets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SRC, default_signals, make_tree, restored_root, run_cli, snapshot
from fsfixtures import tmpfs_fixture  # noqa: F401 (fixture)
from killpoints import pause_point, wait_paused
from parbackup import Catalog
from parbackup.readback.core import read_back
from parbackup.readback.select import records_by_label, restorable_set, select_files
from parbackup.readback.sinks import VerifySinkSpec

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

MiB = 1 << 20


def backup(src: Path, devs: list[Path], cat: str) -> None:
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err


def parts(root: Path) -> list[Path]:
    return list(root.rglob(".parbackup-*.part")) if root.exists() else []


def written_parts(root: Path) -> list[Path]:
    """``.part`` files holding data already (a reader wrote into them)."""
    out = []
    for p in parts(root):
        try:
            if p.stat().st_blocks:
                out.append(p)
        except FileNotFoundError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its reader processes, and what starts them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid"))
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in state


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_restore_kills_readers_and_leaves_no_part(tmp_path, device_dirs, sig):
    big = (16 * MiB, 16 * MiB, 16 * MiB)  # each device reads a few throttled spans
    src = make_tree(tmp_path / "src", seed=3, files=20, max_size=20_000, big=big)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    backup(src, devs, cat)
    out = tmp_path / "out"
    slow = [a for d in devs for a in ("--device", f"file://{d}?limit=8M")]
    argv = ["restore", "--target", str(out), "--catalog", cat, *slow]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", *argv],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 60
        while not written_parts(out):  # a reader is writing the big file
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no .part file ever appeared"
            time.sleep(0.01)
        readers = descendants(proc.pid)
        assert len(readers) >= 2, "the restore runs no reader processes"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err  # 130 SIGINT, 143 SIGTERM (README)
    assert b"Traceback" not in err
    assert parts(out) == []
    assert all(gone(pid) for pid in readers)


@pytest.mark.root
def test_full_target_reports_the_file_that_did_not_fit(tmp_path, device_dirs, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_bytes(os.urandom(64 * 1024))
    (src / "big.bin").write_bytes(os.urandom(12 * MiB))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    backup(src, devs, cat)
    target = tmpfs("target", "6m")
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err
    doc = json.loads(r.out)
    damaged = {d["path"]: d for d in doc["damaged"]}
    big = str(src.resolve() / "big.bin")
    assert big in damaged and "No space left" in damaged[big]["error"]
    root = restored_root(target, src)
    assert parts(target) == []
    restored_bytes = 0
    for f in src.iterdir():
        back = root / f.name
        if str(f.resolve()) in damaged:
            assert not back.exists()
        else:
            assert back.read_bytes() == f.read_bytes()
            restored_bytes += f.stat().st_size
    assert doc["bytes"] == restored_bytes


def test_restore_and_verify_read_every_device_in_its_own_process(tmp_path, device_dirs):
    """Three devices, every kind of sink: the same tree back, verify clean, one file to
    stdout byte for byte."""
    src = make_tree(tmp_path / "src", seed=9, files=60, max_size=200_000, big=(3 * MiB,))
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    backup(src, devs, cat)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and json.loads(r.out)["status"] == "ok", r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    assert parts(out) == []
    big = max(src.rglob("*"), key=lambda p: p.lstat().st_size if p.is_file() else 0)
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--catalog", cat, "--stdout", str(big)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == big.read_bytes()


def fork_server_children() -> list[int]:
    """The reader processes of this (test) process: children of its fork server."""
    servers = [
        pid
        for pid in descendants(os.getpid())
        if b"parbackup.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return [child for server in servers for child in descendants(server)]


@pytest.mark.parametrize(
    ("sig", "error"),
    [(signal.SIGSTOP, "no answer within 2 seconds"), (signal.SIGKILL, "ended unexpectedly")],
)
def test_a_frozen_or_dead_reader_costs_only_its_device(tmp_path, device_dirs, sig, error):
    """A reader stopped (a hung device) is killed after the stall timeout, one killed is
    noticed at once; either way only the files on its device are damaged, naming it."""
    big = (32 * MiB, 32 * MiB, 32 * MiB)  # several throttled 16 MiB spans per device
    src = make_tree(tmp_path / "src", seed=5, files=30, max_size=400_000, big=big)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    backup(src, devs, cat)
    urls = [f"file://{d}?limit=16M" for d in devs]
    result: dict = {}
    reading: set[str] = set()
    both = threading.Event()

    def heard(event: object) -> None:  # DeviceBytes: a reader delivered a span
        reading.add(getattr(event, "device", ""))
        if len(reading) == 2:
            both.set()

    with Catalog(cat) as catalog:
        info = restorable_set(catalog, None)
        files = {f.file_id: f.entry for f in select_files(catalog, info.id, ())}
        records = records_by_label(catalog, info.id, set(files))
        known = catalog.device_urls()

        def verify() -> None:
            result["out"] = None
            result["out"] = read_back(
                bytes.fromhex(info.id),
                records,
                known,
                urls,
                lambda _label: VerifySinkSpec(),
                heard,
                stall=2.0,
                slowest=4 << 20,  # a 16 MiB read may take 4 seconds more
            )

        # the movers of the backup above are the fork servers' children too, and may be
        # on their way out: a victim among them was stopped for ever and the verify
        # went on unharmed (a CI run did so); only the verify's new readers count
        before = set(fork_server_children())
        thread = threading.Thread(target=verify)
        thread.start()
        # both readers have their work and spans still to read (a real event: bytes
        # came back from each device)
        assert both.wait(60), result
        victim = next(pid for pid in fork_server_children() if pid not in before)
        os.kill(victim, sig)
        thread.join(120)
        assert not thread.is_alive()
    assert gone(victim)
    out = result["out"]
    assert out.damaged, "the lost reader's files were not reported"
    (device,) = {device for device, _ in out.damaged.values()}  # one device, named
    assert any(str(d) in device for d in devs)
    assert all(error in e for _, e in out.damaged.values())
    holders: dict[int, set[str]] = {}
    for label, recs in records.items():
        for fid, _ref in recs:
            holders.setdefault(fid, set()).add(label)
    (lost,) = [label for label, url in known.items() if url.removeprefix("file://") in device]
    for fid, labels in holders.items():
        if lost not in labels:  # held only by the other device: read and checked
            assert out.ok(fid, len(labels))
        else:  # whatever the lost reader had not yet reported good is damage
            assert (fid in out.damaged) != out.ok(fid, len(labels))


def test_readers_end_with_a_killed_restore(tmp_path, device_dirs):
    """SIGKILL of a restore takes its readers (and the fork server they come from) with
    it: nothing goes on writing into the target behind the user's back.

    One reader pauses mid-read (a faulty device's gate) and the test waits for that
    pause: the readers are then certainly running. It used to wait for a ``.part`` to
    fill and look once; in a loaded CI run that look came after the readers had done
    their share (1 process seen below the restore, not 2)."""
    src = make_tree(tmp_path / "src", seed=4, files=10, max_size=20_000, big=(16 * MiB,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    backup(src, devs, cat)
    out = tmp_path / "out"
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    paused = f"faulty+file://{devs[0]}?pause_read={MiB}&gate={gate}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "restore", "--target", str(out), "--catalog",
         cat, "--device", paused, "--device", str(devs[1])],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_paused(proc, fifo), "the restore ended without reading its device"
        helpers = descendants(proc.pid)
        assert len(helpers) >= 2  # the fork server and the paused reader, at least
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in helpers):
        assert time.monotonic() < deadline, "a reader outlived its restore"
        time.sleep(0.01)
