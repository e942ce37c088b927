"""What a backup's processes import at start (issue 10: every process of a short backup
pays its interpreter's start-up, the controller before anything else can begin).

Every process's imports are listed by Python itself (PYTHONPROFILEIMPORTTIME), the
movers' stderr kept (PARBACKUP_DEBUG_WORKERS).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

from conftest import SRC, backup_imports, environ
from parbackup.cli.main import movers_named
from parbackup.workers import LocalExecutor


def test_a_backup_without_patterns_never_imports_pathspec(tmp_path):
    """pathspec (gitignore patterns, 12-16 ms of CPU in each process) is imported only when
    a selection has patterns: not by the dispatcher nor by a mover of a plain backup."""
    imported = backup_imports(tmp_path)
    assert not [m for m in imported if m.split(".")[0] == "pathspec"]


def test_a_backup_with_an_exclude_pattern_still_applies_it(tmp_path):
    """The same backup with ``--exclude '*.log'`` imports pathspec where the patterns
    are compiled, and leaves the file out."""
    imported = backup_imports(tmp_path, "--exclude", "**/*.log")
    assert "pathspec" in imported
    listed = subprocess.run(
        [sys.executable, "-m", "parbackup", "files", "--catalog", str(tmp_path / "c.sqlite")],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "a.txt" in listed.stdout
    assert "b.log" not in listed.stdout


def test_a_backup_under_json_never_imports_rich(tmp_path):
    """rich (~30 ms of CPU on the controller's serial start) is imported only by a
    command that prints through it: a ``--json`` backup with nothing else to say never
    loads it, in any process."""
    imported = backup_imports(tmp_path)
    assert not [m for m in imported if m.split(".")[0] == "rich"]


def _one_file_and_two_devices(tmp_path):
    """A source holding one small file, and two empty device directories."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"plain\n")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    return src, devs


def test_a_backup_without_json_still_prints_its_summary(tmp_path):
    """The same backup without ``--json`` prints its summary (tab-separated when stdout
    is not a terminal), through the console made at its first use."""
    src, devs = _one_file_and_two_devices(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", str(src),
         *[a for d in devs for a in ("-d", str(d))], "--catalog", str(tmp_path / "c.sqlite")],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "complete" in proc.stdout
    assert str(devs[0]) in proc.stdout and str(devs[1]) in proc.stdout


PROBE = """
import json
import os

with open(os.environ["AHEAD_MARK"], "a") as fh:  # imported: ready before any work came
    fh.write(f"{os.getpid()}\\n")
if os.environ.get("AHEAD_FIFO"):  # and say so to a test waiting for it
    with open(os.environ["AHEAD_FIFO"], "w") as fh:
        fh.write(f"{os.getpid()}\\n")


def echo(spec, channel):
    channel.send(("got", spec, os.getpid()))
"""


def probe_module(tmp_path, fifo: bool = False):
    """A worker module whose import leaves a mark (the worker's pid) in a file, and
    with ``fifo`` writes it into a FIFO too (the test reads it: a real event to wait on)."""
    (tmp_path / "aheadprobe.py").write_text(PROBE)
    mark = tmp_path / "mark"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), SRC]), "AHEAD_MARK": str(mark)}
    if fifo:
        os.mkfifo(tmp_path / "ready")
        env["AHEAD_FIFO"] = str(tmp_path / "ready")
    return mark, env


def imported(env, timeout: float = 60.0) -> int:
    """The pid of the next worker to import the probe (waits for it on the FIFO, at
    most ``timeout`` seconds: a worker that never imports fails the test, not hangs it)."""
    fd = os.open(env["AHEAD_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(int(timeout * 1000)), "no worker imported the probe"
        data = b""
        while not data.endswith(b"\n"):
            assert poller.poll(int(timeout * 1000))
            chunk = os.read(fd, 64)
            assert chunk, "the worker closed the FIFO without its pid"
            data += chunk
        return int(data)
    finally:
        os.close(fd)


def marks(mark) -> list[int]:
    return [int(x) for x in mark.read_text().split()] if mark.exists() else []


def test_a_worker_started_ahead_imports_its_module_before_its_work_and_then_does_it(tmp_path):
    """``LocalExecutor.ahead``: the worker's interpreter starts and imports what it runs
    while no spec has been sent; ``start`` then hands that very process its work."""
    mark, env = probe_module(tmp_path, fifo=True)
    with environ(env):
        LocalExecutor.ahead("aheadprobe:echo", 1)
        proc, channel, _env = LocalExecutor._ahead["aheadprobe:echo"][0]
        assert imported(env) == proc.pid  # the import happened with no work sent
        assert proc.poll() is None and not channel.poll(0)
        worker = LocalExecutor().start("aheadprobe:echo", {"work": 1})
        assert worker.proc is proc
        assert worker.channel.recv() == ("got", {"work": 1}, proc.pid)
        worker.join(30)
        worker.kill()
    assert marks(mark) == [proc.pid]  # imported once


def test_a_worker_that_died_while_it_waited_is_replaced_by_a_fresh_one(tmp_path):
    _mark, env = probe_module(tmp_path)
    with environ(env):
        LocalExecutor.ahead("aheadprobe:echo", 1)
        proc, _channel, _env = LocalExecutor._ahead["aheadprobe:echo"][0]
        proc.kill()
        proc.wait()
        worker = LocalExecutor().start("aheadprobe:echo", "again")
        answer = worker.channel.recv()
        worker.join(30)
        worker.kill()
    assert answer[:2] == ("got", "again") and answer[2] != proc.pid
    assert not LocalExecutor._ahead["aheadprobe:echo"]


def test_the_movers_a_command_line_names_are_counted_before_it_is_parsed():
    assert movers_named(["/src", "-d", "/a", "--device", "/b", "--device=/c", "-d/e"]) == 4
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "-d", "/c", "--parity", "1"]) == 2
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--parity=2"]) == 0
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--cluster", "tcp://x:1"]) == 0
    assert movers_named(["/src", "-d", "/a", "-d", "/b", "--help"]) == 0
    assert movers_named(["--profile", "home"]) == 0


def test_a_backup_imports_the_mover_once_whatever_its_devices(tmp_path):
    """The movers are forks of one server that imported the mover (engine/movers.py):
    with two devices, the modules only a mover uses are imported once, not once per
    mover (``backup_imports`` checks that the backup completed)."""
    imported = backup_imports(tmp_path)
    for module in ("parbackup.engine.moversource", "parbackup.engine.records"):
        assert imported.count(module) == 1, module


def test_a_worker_started_ahead_dies_with_a_killed_program(tmp_path):
    """A program killed (SIGKILL) while its worker waits for work takes the worker
    with it: no mover started ahead outlives the backup that started it."""
    _mark, env = probe_module(tmp_path, fifo=True)
    program = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from parbackup.workers import LocalExecutor;"
         " LocalExecutor.ahead('aheadprobe:echo', 1);"
         " print(LocalExecutor._ahead['aheadprobe:echo'][0][0].pid, flush=True);"
         " sys.stdin.read()"],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    worker = int(program.stdout.readline())
    pidfd = os.pidfd_open(worker)
    try:
        assert imported(env) == worker  # it runs, and waits for its work
        program.kill()
        program.wait()
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(30_000), "the worker outlived its program"
    finally:
        os.close(pidfd)
        program.stdin.close()


def test_workers_started_ahead_and_not_needed_are_released(tmp_path):
    """A run that needs fewer workers than were started ahead (or runs them
    elsewhere) ends the rest at once instead of leaving them to wait for its end."""
    _mark, env = probe_module(tmp_path)
    with environ(env):
        LocalExecutor.ahead("aheadprobe:echo", 2)
        (used, _, _), (spare, _, _) = LocalExecutor._ahead["aheadprobe:echo"]
        worker = LocalExecutor().start("aheadprobe:echo", "one")
        assert worker.proc is used
        LocalExecutor.release("aheadprobe:echo")
        assert spare.returncode is not None  # ended and reaped (no zombie left), not
        # waiting for this process's end
        assert worker.channel.recv()[:2] == ("got", "one")
        worker.join(30)
        worker.kill()
    assert "aheadprobe:echo" not in LocalExecutor._ahead


def test_a_worker_started_ahead_in_another_environment_is_not_handed_out(tmp_path):
    """A long-lived program that changed its environment since (a server's address, a
    credential) gets a fresh worker with the environment it has now."""
    _mark, env = probe_module(tmp_path)
    with environ(env):
        LocalExecutor.ahead("aheadprobe:echo", 1)
        proc, _channel, _env = LocalExecutor._ahead["aheadprobe:echo"][0]
        with environ({"PARBACKUP_TEST_CHANGED": "1"}):
            worker = LocalExecutor().start("aheadprobe:echo", "now")
        answer = worker.channel.recv()
        worker.join(30)
        worker.kill()
    assert worker.proc is not proc and answer[2] != proc.pid
    assert proc.returncode is not None  # the stale one was ended and reaped


SLOW_MOVER = """
import os, sys, time
if "parbackup.engine.mover" in sys.argv:  # only the movers' fork server starts slowly
    time.sleep(float(os.environ["SLOW_MOVER_START"]))
"""


def test_a_slow_mover_start_does_not_count_against_the_device_timeout(tmp_path):
    """On a loaded machine the movers' start may take longer than ``--device-timeout``:
    the timeout counts from the mover's ``Started``, so healthy devices are not failed
    for it (they were: "no answer within 1 seconds"). The slow start is real: the
    movers' fork server (engine/movers.py) runs a ``sitecustomize`` that takes 3 s."""
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW_MOVER)
    src, devs = _one_file_and_two_devices(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", str(src), "--device-timeout", "1",
         *[a for d in devs for a in ("-d", str(d))], "--catalog", str(tmp_path / "c.sqlite"),
         "--json"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "slow"), SRC]),
             "SLOW_MOVER_START": "3"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [d["status"] for d in report["devices"]] == ["ok", "ok"]
