"""Every worker process is named after the function it runs (``move``, ``scan_part``,
``read_worker``: its ``comm``, what ``ps``, ``top`` and profilers show), and the fork
server ``forkserver``: otherwise all of them are one more ``python3``, and a forked
worker shows its server's command line (workers.py ``name_process``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parbackup.forkserver import ForkServerExecutor
from parbackup.workers import LocalExecutor

PROBE = """
def who_am_i(spec, channel):
    with open("/proc/self/comm") as fh:
        channel.send(fh.read().strip())
"""


@pytest.mark.parametrize("forked", [True, False])
def test_a_worker_is_named_after_its_function(tmp_path: Path, monkeypatch, forked) -> None:
    (tmp_path / "pb_name_probe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    preload = ("pb_name_probe",)
    executor = ForkServerExecutor(preload=preload) if forked else LocalExecutor()
    worker = executor.start("pb_name_probe:who_am_i", None)
    try:
        assert worker.channel.poll(60)
        assert worker.channel.recv() == "who_am_i"
    finally:
        worker.kill()
    if forked:
        server = ForkServerExecutor._servers[preload][0]
        assert Path(f"/proc/{server.pid}/comm").read_text().strip() == "forkserver"
        proc, sock = ForkServerExecutor._servers.pop(preload)
        sock.close()
        proc.wait(60)
