"""ls, files, diff and verify on a set that is not restorable, named by its id.

A set id names any set, restorable or not (``report`` and ``repair`` need that). Before,
``ls`` and ``files`` listed what a killed run had scanned as if it were backed up (and
nothing at all, exit 0, for a forgotten set), ``diff latest KILLED`` said "added 0,
removed 0, changed 0" (the dead set equal to the live one) and ``diff FORGOTTEN latest``
"added 23"; ``verify`` called a forgotten set damaged ("rows are lost (a damaged
catalog); rebuild-catalog reads them"). Each is refused now as ``restore`` refuses it:
exit 1, naming the set and its status.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from killpoints import pause_point, wait_paused
from parbackup.catalog import Catalog

pytestmark = pytest.mark.slow  # several real backups and a killed one


def _backup(src: Path, urls: list[str], cat: Path, *extra: str):
    args = [a for u in urls for a in ("-d", u)]
    return run_cli("backup", str(src), *args, "--catalog", str(cat), "--json", *extra)


def _two_sets(tmp: Path) -> tuple[Path, list[Path], Path]:
    """A tree, two directory devices and a catalog holding two complete sets of it."""
    src = make_tree(tmp / "src", files=20, max_size=200_000)
    devs = [tmp / "d1", tmp / "d2"]
    for d in devs:
        d.mkdir()
    cat = tmp / "cat.sqlite"
    first = _backup(src, [str(d) for d in devs], cat)
    assert first.code == 0, first.err
    (src / "new.txt").write_bytes(b"new\n")
    assert _backup(src, [str(d) for d in devs], cat).code == 0
    return src, devs, cat


def _forgotten(src: Path, devs: list[Path], cat: Path) -> None:
    forgot = run_cli("forget", "--keep-last", "1", "--catalog", str(cat))
    assert forgot.code == 0, forgot.err


def _killed(src: Path, devs: list[Path], cat: Path) -> None:
    """A run SIGKILLed as it writes: its set stays 'running' with nobody holding it."""
    gate = cat.parent / "gate"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{devs[0]}?pause_after=1&gate={gate}", str(devs[1])]
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), "--catalog", str(cat)]
    cmd += [a for u in urls for a in ("-d", u)]
    proc = subprocess.Popen(
        cmd,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_paused(proc, fifo), "the run never reached its pause"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _failed(src: Path, devs: list[Path], cat: Path) -> None:
    failing = [f"faulty+file://{d}?fail_after=0" for d in devs]
    assert _backup(src, failing, cat).code == 1


@pytest.fixture(scope="module", params=["forgotten", "running", "failed"])
def dead_set(request, tmp_path_factory: pytest.TempPathFactory):
    """(catalog, {status: set id}): two complete sets, then one made dead: forgotten,
    killed mid-run (still 'running', its holder gone) or failed (every device failed).
    A catalog each: the clean-up of a later run would drop the dead set."""
    status = request.param
    src, devs, cat = _two_sets(tmp_path_factory.mktemp(f"dead_{status}"))
    {"forgotten": _forgotten, "running": _killed, "failed": _failed}[status](src, devs, cat)
    with Catalog(str(cat)) as c:
        ids = {s.status: s.id for s in c.sets()}
    assert status in ids and "complete" in ids, ids
    return cat, status, ids


def _refused(r, set_id: str, status: str) -> None:
    assert r.code == 1, (r.code, r.out, r.err)
    said = r.json["error"] if r.out.startswith("{") else r.err  # --json: in the document
    assert f"set {set_id} is {status}, not restorable" in said, (r.out, r.err)
    assert "rows are lost" not in r.out + r.err


def test_ls_and_files_refuse_a_set_that_is_not_restorable(dead_set) -> None:
    cat, status, ids = dead_set
    set_id = ids[status]
    _refused(run_cli("ls", set_id, "--catalog", str(cat)), set_id, status)
    _refused(run_cli("ls", set_id, "--catalog", str(cat), "--json"), set_id, status)
    _refused(run_cli("files", "--set", set_id, "--catalog", str(cat)), set_id, status)
    live = run_cli("ls", ids["complete"], "--catalog", str(cat))
    assert live.code == 0 and "new.txt" in live.out


def test_diff_refuses_a_set_that_is_not_restorable(dead_set) -> None:
    cat, status, ids = dead_set
    set_id = ids[status]
    _refused(run_cli("diff", "latest", set_id, "--catalog", str(cat)), set_id, status)
    _refused(run_cli("diff", set_id, "latest", "--catalog", str(cat)), set_id, status)


def test_verify_refuses_a_set_that_is_not_restorable(dead_set) -> None:
    cat, status, ids = dead_set
    set_id = ids[status]
    r = run_cli("verify", "--set", set_id, "--catalog", str(cat))
    _refused(r, set_id, status)
    assert "DAMAGED" not in r.out + r.err
