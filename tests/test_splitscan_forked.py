"""The split scan's helper of a backup is forked from the movers' fork server
(engine/movers.py ``scan_helpers``), not started as a fresh interpreter by the
controller, and its rows are those of a scan without it; killed at the scan's end and
never joined, it leaves no descriptor behind.

Who forks the helper is written by the forking process itself: a ``sitecustomize`` on
the PYTHONPATH of every process the run starts registers an ``os.register_at_fork``
hook that writes, in the parent right after each fork, its own process id and the
worker the fork is for. The parent writes it before it hands the worker to the
controller, so a helper killed at once (the scan ended first) is written too; a fresh
interpreter (``LocalExecutor``, through ``subprocess``) runs no such hook, and is not
the server's child. The machine's load must not decide whether a helper starts: a core
is said to be spare (``spare_core``), and the tree is shared from its 50th entry
(``SPLIT_AT``), so a small tree is enough.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from conftest import SRC, make_tree, restored_root, snapshot
from parbackup import Catalog, RestoreOptions, run_backup, run_restore
from parbackup.engine import splitscan
from parbackup.engine.movers import MOVER, PRELOAD, mover_executor
from parbackup.engine.prepare import scan
from parbackup.engine.splitscan import TARGET
from parbackup.entries import Entries
from parbackup.forkserver import ForkServerExecutor
from parbackup.sources.base import SourceSpec
from parbackup.sources.local import LocalTree

RECORDER = """
import os, sys

def _forked():  # in the process that forked, before fork() returns there
    target = sys._getframe(1).f_locals.get("target", "?")  # workers.fork_serving's
    with open(os.environ["FORKS_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {target}\\n")

os.register_at_fork(after_in_parent=_forked)
"""


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file every fork from now on is written to ("FORKER_PID TARGET"); a fork
    server of its own for the test (started with the recorder), stopped after it."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "forks.log"
    log.touch()
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("FORKS_LOG", str(log))
    monkeypatch.setattr(splitscan, "SPLIT_AT", 50)
    monkeypatch.setattr(splitscan, "spare_core", lambda: True)
    ForkServerExecutor.stop_servers()  # one started earlier has no recorder
    yield log
    ForkServerExecutor.stop_servers()


def forks(log: Path) -> list[tuple[int, str]]:
    """(the forking process, the worker forked) of every fork written to ``log``."""
    return [(int(pid), target) for pid, target in map(str.split, log.read_text().splitlines())]


def wide(root: Path) -> Path:
    """Twenty directories of files, well past ``SPLIT_AT`` entries, with hard links."""
    make_tree(root, seed=7, files=40, max_size=2000)
    for d in range(20):
        top = root / f"w{d:02}"
        (top / "sub").mkdir(parents=True)
        for f in range(8):
            (top / f"f{f}").write_bytes(b"x" * (d + f))
            (top / "sub" / f"g{f}").write_bytes(b"y" * f)
    os.link(root / "w01" / "f1", root / "w19" / "sub" / "same")
    return root


def test_a_backups_scan_helper_is_a_child_of_the_movers_fork_server(
    tmp_path, device_dirs, recorded
) -> None:
    """A real backup onto two devices: the movers' fork server (not this process, the
    controller) forked its two movers and its one scan helper; the set restores whole."""
    src = wide(tmp_path / "src")
    devs = device_dirs(2)
    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(src)], [str(d) for d in devs], cat)
        assert report.status == "complete"
        server = ForkServerExecutor._servers[PRELOAD][0].pid
        assert server != os.getpid()
        assert sorted(forks(recorded)) == [(server, MOVER), (server, MOVER), (server, TARGET)]
        run_restore(cat, RestoreOptions(target=str(tmp_path / "out")))
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


def rows(entries: Entries) -> list[tuple]:
    return [
        (entries.path_bytes(i), entries.kind[i], entries.size[i], entries.mode[i],
         entries.mtime_ns[i], entries.ino[i], entries.link_bytes(i), entries.meta_bytes(i))
        for i in range(len(entries))
    ]  # fmt: skip


class ReadyFirst:
    """The movers' executor, returning a helper only once it said it is ready (its
    first, empty part done), so that the scan gives it work whatever the machine's
    speed; the parts of work it was sent are counted."""

    def __init__(self) -> None:
        self.executor = mover_executor()
        self.sent: list = []

    def start(self, target, spec, name="", host=""):
        worker = self.executor.start(target, spec, name, host)
        assert worker.channel.poll(60)
        send = worker.send
        worker.send = lambda msg: (self.sent.append(msg), send(msg))[1]
        return worker


def test_the_forked_helpers_scan_gives_the_rows_of_one_process(tmp_path, recorded) -> None:
    """A backup's scan (engine/prepare.py) with the movers' executor: a helper forked
    from the server walked parts of the tree, and the table is the one a scan without
    it gives."""
    src = wide(tmp_path / "src")
    spec = SourceSpec("tree", str(src), str(src))
    skipped: list = []
    ready = ReadyFirst()
    got = scan([spec], skipped, helpers=ready)
    server = ForkServerExecutor._servers[PRELOAD][0].pid
    assert forks(recorded) == [(server, TARGET)]
    assert ready.sent  # the helper had work: its rows are in the table
    want = Entries()
    LocalTree(spec).scan(want, 0, lambda p, e: pytest.fail(f"{p}: {e}"))
    assert rows(got) == rows(want)
    assert skipped == []


def pidfds() -> set[int]:
    """This process's open pidfds (their fdinfo names the process), once the garbage
    of earlier tests in this process (a worker dropped in a reference cycle, whose
    pidfd goes with it) has been collected: else it may go in the middle of a test."""
    gc.collect()
    found = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if any(line.startswith("Pid:") for line in text.splitlines()):
            found.add(int(fd))
    return found


def test_a_forked_helper_leaves_no_descriptor_behind(tmp_path, recorded) -> None:
    """The helper is killed at the end of the scan and never joined: the pidfd the
    server handed over for it is closed with it (forkserver.py ``ForkedWorker``), not
    kept one per scan by a program that runs many backups."""
    src = wide(tmp_path / "src")
    spec = SourceSpec("tree", str(src), str(src))
    before = pidfds()
    for _ in range(3):
        scan([spec], [], helpers=mover_executor())
    assert len(forks(recorded)) == 3  # three helpers were forked
    assert pidfds() - before == set()  # none opened here is left (others may close)


SPLIT_EARLY = """
import os
if os.environ.get("TEST_SPLIT_AT"):  # this test's plan: split at once, a core spare
    from parbackup.engine import splitscan
    splitscan.SPLIT_AT = int(os.environ["TEST_SPLIT_AT"])
    splitscan.spare_core = lambda: True
"""


def test_plans_scan_helper_is_forked_as_a_backups_is(tmp_path, device_dirs, recorded) -> None:
    """``parbackup plan`` scans a tree as a backup does (engine/prepare.py ``scan``): its
    helper is forked from the movers' fork server, not started by the program as a fresh
    interpreter (it was), and the plan is the one a scan without it gives."""
    src = wide(tmp_path / "src")
    devs = device_dirs(2)
    site = tmp_path / "site" / "sitecustomize.py"
    site.write_text(site.read_text() + SPLIT_EARLY)
    args = [sys.executable, "-m", "parbackup", "plan", str(src), "--json"]
    args += ["-d", str(devs[0]), "-d", str(devs[1]), "--catalog", str(tmp_path / "c.sqlite")]
    path = os.pathsep.join((str(tmp_path / "site"), SRC))

    def plan(split_at: str) -> tuple[int, dict]:
        env = {**os.environ, "PYTHONPATH": path, "TEST_SPLIT_AT": split_at}
        with subprocess.Popen(args, env=env, stdout=PIPE, stderr=PIPE, text=True) as proc:
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return proc.pid, json.loads(out)

    pid, got = plan("50")
    helpers = forks(recorded)
    assert [target for _pid, target in helpers] == [TARGET]
    assert helpers[0][0] != pid  # forked by the server, not by the program
    recorded.write_text("")
    _pid, want = plan("")  # no split: one process
    assert forks(recorded) == []
    assert got == want and len(got["items"]) > 200


def test_a_cold_server_is_started_half_way_to_the_split(tmp_path, recorded, monkeypatch) -> None:
    """A scan with a cold server (``plan`` starts none before it) starts it once half of
    ``SPLIT_AT`` entries were walked, so that it is ready when the helper is wanted
    (the scan waited for its imports before); a smaller tree starts nothing."""
    src = wide(tmp_path / "src")
    spec = SourceSpec("tree", str(src), str(src))
    want = Entries()
    LocalTree(spec).scan(want, 0, lambda p, e: pytest.fail(f"{p}: {e}"))
    n = len(want)
    monkeypatch.setattr(splitscan, "SPLIT_AT", 2 * n + 2)  # half of it is past the tree
    assert rows(scan([spec], [], helpers=mover_executor())) == rows(want)
    assert not ForkServerExecutor._servers
    monkeypatch.setattr(splitscan, "SPLIT_AT", n)  # half of it is inside, all of it past
    assert rows(scan([spec], [], helpers=mover_executor())) == rows(want)
    assert PRELOAD in ForkServerExecutor._servers  # started
    assert forks(recorded) == []  # and no helper forked
