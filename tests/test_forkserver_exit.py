"""The fork server leaves without tearing down its interpreter (forkserver._SERVER).

The parent waits for the server at every exit, and tearing down an interpreter that
preloaded the engine cost 40 to 120 ms of each command's wall time. The server holds
nothing to flush, so it leaves with ``os._exit``: its exit handlers never run.
"""

from __future__ import annotations

from pathlib import Path

from parbackup.forkserver import ForkServerExecutor

PRELOAD = """
import atexit, os
open(os.path.join({here!r}, "imported"), "w").close()
atexit.register(lambda: open(os.path.join({here!r}, "torn-down"), "w").close())
"""


def test_server_leaves_without_teardown(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pb_exit_probe.py").write_text(PRELOAD.format(here=str(tmp_path)))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    executor = ForkServerExecutor(preload=("pb_exit_probe",))
    executor.warm()
    proc, sock = ForkServerExecutor._servers.pop(executor.preload)
    sock.close()  # the server sees its control socket close: the program has ended
    assert proc.wait(60) == 0
    assert (tmp_path / "imported").exists(), "the server never loaded its preload"
    assert not (tmp_path / "torn-down").exists(), "the server ran its exit handlers"
