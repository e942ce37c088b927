"""The engine's shape: one mover process per device, and a mover that dies is a failed
device whose work goes to the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, snapshot
from parbackup import BackupOptions, Catalog, RestoreOptions, run_backup, run_restore, workers
from parbackup.workers import LocalExecutor


class RecordingExecutor(LocalExecutor):
    """The default executor, remembering every worker it started."""

    def __init__(self) -> None:
        self.started: list = []

    def start(self, target, spec, name="", host=""):
        worker = super().start(target, spec, name, host)
        self.started.append(worker)
        return worker


def wait_for(path: Path, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (a gate file a paused device creates)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def backed_up_and_restored(tmp_path, src, devs) -> RecordingExecutor:
    """Back ``src`` up onto ``devs`` through a RecordingExecutor and check that the set
    restores whole; the executor."""
    executor = RecordingExecutor()
    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(src)], [str(d) for d in devs], cat, executor=executor)
        assert report.status == "complete"
        run_restore(cat, RestoreOptions(target=str(tmp_path / "out")))
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)
    return executor


def test_every_device_is_written_by_its_own_process(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=21, files=40, big=(3 << 20,))
    devs = device_dirs(3)
    executor = backed_up_and_restored(tmp_path, src, devs)
    pids = {w.proc.pid for w in executor.started}
    assert len(executor.started) == 3 and len(pids) == 3 and os.getpid() not in pids
    assert all(w.proc.returncode == 0 for w in executor.started)  # each ended cleanly
    assert all(any((d / "sets").rglob("*.pbv")) for d in devs)


def test_movers_are_forked_when_the_interpreter_cannot_be_run_again(
    tmp_path, device_dirs, monkeypatch
):
    """workers._spawn's fallback (an interpreter only its owner may enter): the movers
    (and the restore's readers) are forked from this process (workers.fork_serving);
    each serves and ends cleanly."""
    real = subprocess.Popen

    def refused(args, *more, **kw):
        if args[:2] == [sys.executable, "-c"]:  # a worker, not anything else
            raise PermissionError(13, "Permission denied", sys.executable)
        return real(args, *more, **kw)

    monkeypatch.setattr(workers.subprocess, "Popen", refused)
    src = make_tree(tmp_path / "src", seed=23, files=20, big=(1 << 20,))
    executor = backed_up_and_restored(tmp_path, src, device_dirs(2))
    assert len(executor.started) == 2
    assert all(isinstance(w.proc, workers._Forked) for w in executor.started)
    assert all(w.proc.wait(60) == 0 for w in executor.started)


@pytest.mark.slow
def test_a_mover_killed_mid_backup_is_a_failed_device(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=22, files=30, big=(6 << 20, 5 << 20))
    good = device_dirs(2)
    victim = tmp_path / "victim"
    victim.mkdir()
    gate = tmp_path / "gate"
    urls = [str(good[0]), f"faulty+file://{victim}?pause_after=1M&gate={gate}", str(good[1])]
    executor = RecordingExecutor()
    out: dict = {}
    catalog = str(tmp_path / "cat.sqlite")

    def backup() -> None:
        with Catalog(catalog) as cat:
            options = BackupOptions(device_timeout=30)
            out["report"] = run_backup([str(src)], urls, cat, options, executor=executor)

    thread = threading.Thread(target=backup)
    thread.start()
    wait_for(Path(f"{gate}.paused"))  # the victim's mover is inside a volume write
    os.kill(executor.started[1].proc.pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    report = out["report"]
    assert report.status == "degraded" and report.exit_code == 3
    failed = report.devices[1]
    assert failed.status == "failed" and "ended unexpectedly" in failed.error
    assert sum(failed.redirected.values()) > 0
    gate.touch()
    with Catalog(catalog) as cat:
        labels = {ref.label for _, ref in cat.records(report.set_id)}
        assert failed.label not in labels  # nothing of the set needs the dead device
        run_restore(cat, RestoreOptions(target=str(tmp_path / "out")))
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


@pytest.mark.slow
def test_movers_end_with_a_killed_backup(tmp_path, device_dirs):
    """SIGKILL of the backup takes its movers with it: none goes on writing a volume
    behind the next run's clean-up."""
    from killpoints import pause_point, wait_paused

    src = make_tree(tmp_path / "src", seed=23, files=20, big=(6 << 20,))
    good = device_dirs(1)[0]
    victim = tmp_path / "victim"
    victim.mkdir()
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    urls = [str(good), f"faulty+file://{victim}?pause_after=1M&gate={gate}"]
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), "--catalog",
           str(tmp_path / "cat.sqlite")] + [a for u in urls for a in ("-d", u)]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert wait_paused(proc, fifo)  # a mover is inside a volume write, paused
    movers = _below(proc.pid)
    assert len(movers) == 3  # the movers' fork server and its two movers (engine/movers.py)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") and _running(p) for p in movers):
        assert time.monotonic() < deadline, "a mover outlived its backup"
        time.sleep(0.01)
    gate.touch()  # nothing is left to pass the gate


def _below(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs, ...)."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        children = [int(p) for p in fh.read().split()]
    return children + [p for c in children for p in _below(c)]


def _running(pid: int) -> bool:
    """True while ``pid`` is alive (not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
