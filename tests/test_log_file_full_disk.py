"""``--log-file`` on a disk that fills (session 18).

The log's lines were lost without a word: the logging module drops a line it cannot
write, and its error report was switched off. The first line lost is now said once on
stderr (under ``-q`` too), the command goes on (the log is not the data), and a command
with a JSON result names it there (``log_file_error``). A real tmpfs filled by another
process (a night's log is a few KiB: the disk is full from the start).
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_tree, run_cli
from fsfixtures import fill_up, tmpfs_fixture  # noqa: F401 (fixture)


def test_a_log_file_that_fills_is_said_once_and_the_backup_goes_on(
    tmp_path: Path, tmpfs, device_dirs
) -> None:
    src = make_tree(tmp_path / "src", seed=9, files=30, max_size=20_000)
    devs = device_dirs(2)
    dargs = [a for d in devs for a in ("-d", str(d))]
    disk = tmpfs("logs", "256k")
    fill_up(disk)
    log = disk / "parbackup.log"
    cat = str(tmp_path / "cat.sqlite")
    said = f"parbackup: warning: --log-file {log}: No space left on device: log lines are lost"
    r = run_cli(
        "-q", "--log-file", str(log), "backup", str(src), *dargs, "--catalog", cat, "--json"
    )
    assert r.code == 0, r.out + r.err
    assert r.json["status"] == "complete"
    assert r.err.count(said) == 1 and r.err.count("\n") == 1, r.err
    assert r.json["log_file_error"].startswith(f"--log-file {log}: No space left on device")
    (disk / "filler").unlink()  # room again: the next run's lines are written
    r = run_cli("--log-file", str(log), "verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.err == "" and "log_file_error" not in r.json, r.out + r.err
    assert "verify" in log.read_text()
