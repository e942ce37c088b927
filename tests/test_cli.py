"""The command line's contract, tried as a newcomer and a script would (issue 11).

Real processes throughout: names that look like markup or are not UTF-8, a terminal (a
real pty) and a pipe, two concurrent backups racing for one catalog through a symlink,
SIGTERM and SIGINT sent to a running backup, a catalog on a tmpfs that fills up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, default_signals, make_tree, restored_root, run_cli, snapshot
from fsfixtures import Gate, fill_up, tmpfs_fixture  # noqa: F401 (fixture)

PARBACKUP = [sys.executable, "-m", "parbackup"]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
ODD_NAMES = {
    b"a[/]": b"inside a bracket directory\n",
    b"[bold]x": b"markup\n",
    b"[/]": b"closing tag\n",
    b"new\nline": b"newline in the name\n",
    b"bad\xff\xfename": b"not utf-8\n",
    b"tab\there": b"tab\n",
}


def odd_tree(root: Path) -> Path:
    """A tree whose names rich would read as markup, or that are not one printable line."""
    for name, data in ODD_NAMES.items():
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return root


def dargs(*devices: object) -> list[str]:
    return [a for d in devices for a in ("-d", str(d))]


def start(*args: str, **kw) -> subprocess.Popen:
    """A parbackup process in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "parbackup", *args],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def run_in_pty(*args: str) -> tuple[int, str]:
    """Run parbackup with stdout and stderr on a real terminal; its exit code and output."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", *args],
        env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200", "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


# -- 1. user data is never markup --------------------------------------------------------------


@pytest.mark.slow
def test_odd_names_back_up_list_and_restore(tmp_path, device_dirs):
    src = odd_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *dargs(*devs), "--catalog", cat)  # human output, a pipe
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    r = run_cli("files", "--catalog", cat)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    out = r.out.splitlines()
    assert len(out) == len(ODD_NAMES) + 3  # and src, a[, [ as directories: one line each
    for shown in ("/a[/]", "/[bold]x", "/[/]", "/new\\nline", "/bad\\xff\\xfename", "/tab\\there"):
        assert any(row.endswith(shown) for row in out), (shown, out)
    for row in out:
        _mode, _size, mtime, _ = row.split(None, 3)
        assert ISO_UTC.match(mtime), row
    doc = run_cli("files", "--catalog", cat, "--json").json
    assert doc["status"] == "ok"
    got = {os.fsencode(f["path"]) for f in doc["files"] if f["kind"] == "file"}
    assert got == {os.path.join(os.fsencode(src), n) for n in ODD_NAMES}
    assert all(ISO_UTC.match(f["mtime"]) for f in doc["files"])
    out_dir = tmp_path / "out"
    r = run_cli("restore", "--target", str(out_dir), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out_dir, src)) == snapshot(src)


@pytest.mark.slow
def test_odd_names_on_a_terminal(tmp_path, device_dirs):
    src = odd_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    code, out = run_in_pty("backup", str(src), *dargs(*devs), "--catalog", cat)
    assert code == 0, out
    code, out = run_in_pty("files", "--catalog", cat)
    assert code == 0, out
    assert "Traceback" not in out
    for shown in ("a[/]", "[bold]x", "[/]", "new\\nline", "bad\\xff\\xfename"):
        assert shown in out, (shown, out)
    code, out = run_in_pty("sets", "--catalog", cat)
    assert code == 0 and "complete" in out, out


# -- 2. the run lock cannot be bypassed through a symlink --------------------------------------


@pytest.mark.slow
def test_catalog_through_a_symlink_is_still_locked(tmp_path):
    src = make_tree(tmp_path / "src", seed=5, files=20, max_size=50_000, big=(400_000,))
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    cat = real_dir / "cat.sqlite"
    via_link = tmp_path / "link.sqlite"  # the file itself named through a symlink
    via_link.symlink_to(cat)
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{d1}?pause_after=64K&gate={gate}"
    first = start("backup", str(src), "-d", str(d0), "-d", slow, "--catalog", str(cat), "--json")
    try:
        gate.wait_paused()
        second = run_cli("backup", str(src), *dargs(d0, d1), "--catalog", str(via_link))
        assert second.code == 1, (second.out, second.err)
        assert "in use by another backup" in second.err
        assert str(cat) in second.err  # the real, absolute name
        assert second.err.count("\n") == 1  # one line
        gate.open()
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert json.loads(out)["status"] == "complete"
    v = run_cli("verify", "--catalog", str(via_link), "--json")
    assert v.code == 0 and v.json["status"] == "ok", v.out
    assert [s["status"] for s in run_cli("sets", "--catalog", str(cat), "--json").json["sets"]] == [
        "complete"
    ]


@pytest.mark.slow
def test_relative_catalog_is_made_absolute(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=2, files=5, max_size=1000)
    devs = device_dirs(2)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [*PARBACKUP, "backup", str(src), *dargs(*devs), "--catalog", "cat.sqlite", "--json"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    new = subprocess.run(
        [*PARBACKUP, "rebuild-catalog", *dargs(*devs), "--catalog", "new.sqlite", "--json"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
    )
    assert new.returncode == 0, new.stderr
    assert json.loads(new.stdout)["catalog"] == str(work / "new.sqlite")
    r = run_cli("verify", "--catalog", str(work / "cat.sqlite"), "--json")  # from elsewhere
    assert r.code == 0 and r.json["status"] == "ok"


# -- 3. output for scripts ---------------------------------------------------------------------


@pytest.mark.slow
def test_pipes_get_full_ids_and_untruncated_columns(tmp_path, device_dirs):
    src = make_tree(tmp_path / "a-long-source-directory-name-for-the-table", seed=3, files=5)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    set_id = run_cli("backup", str(src), *dargs(*devs), "--catalog", cat, "--json").json["set"]
    r = run_cli("sets", "--catalog", cat, env={"COLUMNS": "40"})
    assert r.code == 0
    header, row = r.out.splitlines()[1:]
    assert header.split("\t")[:3] == ["set", "created", "status"]
    cells = row.split("\t")
    assert cells[0] == set_id and len(set_id) == 32
    assert ISO_UTC.match(cells[1]) and cells[2] == "complete"
    assert cells[-1] == str(src)
    r = run_cli("backup", str(src), *dargs(*devs), "--catalog", cat, env={"COLUMNS": "40"})
    ids = re.findall(r"\b[0-9a-f]{32}\b", r.out)
    assert r.code == 0 and len(ids) == 1, r.out  # the new set's full id in the title


@pytest.mark.slow
def test_every_json_document_is_an_object_with_status(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=4, files=5, max_size=2000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    docs = {}
    for args in (
        ("plan", str(src), *dargs(*devs)),
        ("backup", str(src), *dargs(*devs), "--catalog", cat),
        ("sets", "--catalog", cat),
        ("files", "--catalog", cat),
        ("verify", "--catalog", cat),
        ("restore", "--target", str(tmp_path / "out"), "--catalog", cat),
        ("prune", "--orphans", "--catalog", cat),
        ("rebuild-catalog", *dargs(*devs), "--catalog", str(tmp_path / "new.sqlite")),
    ):
        r = run_cli(*args, "--json")
        assert r.code == 0, (args, r.err)
        doc = r.json
        assert isinstance(doc, dict) and doc["status"] in ("ok", "complete"), (args, doc)
        docs[args[0]] = doc
    assert ISO_UTC.match(docs["sets"]["sets"][0]["created"])
    # errors: ours and click's, as one JSON object on stdout
    for args, code in (
        (("files", "--catalog", cat, "--set", "nosuchset"), 1),
        (("sets", "--catalog", str(tmp_path / "none.sqlite")), 1),
        (("backup", str(src), "--catalog", cat), 2),  # no --device: click's usage error
        (("restore", "--nosuchoption", "--catalog", cat), 2),
        (("backup", str(src), *dargs(*devs), "--strategy", "bogus"), 2),
    ):
        r = run_cli(*args, "--json")
        assert r.code == code, (args, r.out, r.err)
        doc = r.json
        assert doc["status"] == "failed" and doc["exit_code"] == code and doc["error"], doc
        assert "Traceback" not in r.err
    r = run_cli("backup", str(src), "--catalog", cat)  # without --json: click's usual text
    assert r.code == 2 and "Missing option" in r.err and not r.out


@pytest.mark.slow
def test_stdout_closed_early_is_quiet(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=9, files=30, max_size=1000)
    cat = str(tmp_path / "cat.sqlite")
    assert run_cli("backup", str(src), *dargs(*device_dirs(2)), "--catalog", cat).code == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `parbackup files | head -0`: nobody reads any more
    proc = subprocess.run(
        [*PARBACKUP, "files", "--catalog", cat],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == b"", proc.stderr


# -- 4. -v, -q, --log-file ---------------------------------------------------------------------


@pytest.mark.slow
def test_quiet_verbose_and_log_file(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=6, files=5, max_size=2000)
    d0, d1, d2 = device_dirs(3)
    dead = f"faulty+file://{d2}?fail_open=1"
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("-q", "backup", str(src), *dargs(d0, d1), "--catalog", cat)
    assert r.code == 0 and r.out == "" and r.err == "", r
    r = run_cli("backup", str(src), *dargs(d0, d1, dead), "--catalog", cat, "-q")  # after, too
    assert r.code == 3 and r.err == "", r
    (only,) = r.out.splitlines()  # the problem, nothing else
    assert only.startswith("device failed at start: ") and dead in only
    r = run_cli("-q", "sets", "--catalog", cat, "--json")  # --json still prints its document
    assert r.code == 0 and len(r.json["sets"]) == 2
    r = run_cli("backup", str(src), *dargs(d0, d1, dead), "--catalog", cat)
    assert "WARNING" not in r.err  # the library's log is not on stderr by default
    r = run_cli("-v", "backup", str(src), *dargs(d0, d1, dead), "--catalog", cat)
    assert r.code == 3
    assert "WARNING parbackup.engine.backup: device failed before the backup started" in r.err
    assert "DEBUG" not in r.err
    r = run_cli("sets", "--catalog", cat, "-vv")
    assert "DEBUG parbackup.cli: parbackup" in r.err
    log = tmp_path / "log" / "parbackup.log"
    log.parent.mkdir()
    r = run_cli("--log-file", str(log), "backup", str(src), *dargs(d0, d1, dead), "--catalog", cat)
    assert r.code == 3 and "WARNING" not in r.err
    lines = log.read_text().splitlines()
    warn = [x for x in lines if "device failed before the backup started" in x]
    assert len(warn) == 1 and ISO_UTC.match(warn[0].split(" ", 1)[0]), lines
    assert " WARNING parbackup.engine.backup: " in warn[0]
    secret = "sftp://backup:hunter2@127.0.0.1:1/x?key=s3cr3t"
    r = run_cli("--log-file", str(log), "-vv", "verify", "-d", secret, "--catalog", cat + ".no")
    assert r.code == 1
    assert "hunter2" not in log.read_text() + r.err and "s3cr3t" not in log.read_text() + r.err
    assert "sftp://backup:***@127.0.0.1:1/x?key=***" in log.read_text()
    r = run_cli("--log-file", str(tmp_path / "no" / "such" / "dir" / "x.log"), "sets")
    assert r.code == 2 and r.err.count("\n") == 1 and "x.log" in r.err, r.err


# -- 5. interruptions --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_interrupts_a_backup_cleanly(tmp_path, signum, code):
    src = make_tree(tmp_path / "src", seed=7, files=20, max_size=50_000, big=(400_000,))
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{d1}?pause_after=64K&gate={gate}"
    # (a runner may pass these signals ignored; see default_signals and the nohup test)
    proc = start("backup", str(src), "-d", str(d0), "-d", slow, "--catalog", cat, "--json",
                 preexec_fn=default_signals)  # fmt: skip
    try:
        gate.wait_paused(proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["status"] == "interrupted" and doc["exit_code"] == code
    assert signal.Signals(signum).name in doc["error"]
    (info,) = run_cli("sets", "--catalog", cat, "--json").json["sets"]
    assert info["status"] == "interrupted"  # at once, not only when the next run looks
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code != 0  # nothing of an interrupted set is offered as restorable
    r = run_cli("backup", str(src), *dargs(d0, d1), "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "complete", r.err


@pytest.mark.slow
def test_an_ignored_hangup_stays_ignored(tmp_path):
    """Under ``nohup`` (SIGHUP ignored) a hang-up must not stop the backup."""
    src = make_tree(tmp_path / "src", seed=10, files=10, max_size=50_000, big=(300_000,))
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{d1}?pause_after=64K&gate={gate}"
    proc = start(
        "backup",
        str(src),
        "-d",
        str(d0),
        "-d",
        slow,
        "--catalog",
        cat,
        "--json",
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        gate.wait_paused()
        proc.send_signal(signal.SIGHUP)
        gate.open()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "complete"


def test_help_documents_the_exit_codes():
    r = run_cli("--help")
    assert r.code == 0
    assert "130" in r.out and "143" in r.out and "SIGTERM" in r.out


# -- 6. restore selection ----------------------------------------------------------------------


@pytest.mark.slow
def test_restore_include_double_star_and_exclude(tmp_path, device_dirs):
    src = tmp_path / "src"
    files = {
        "x.conf": b"top",
        "a/x.conf": b"one down",
        "a/b/c/x.conf": b"deep",
        "a/b/keep.txt": b"text",
        "a/b/c/x.conf.bak": b"backup copy",
        "cache/x.conf": b"cached",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    cat = str(tmp_path / "cat.sqlite")
    assert run_cli("backup", str(src), *dargs(*device_dirs(2)), "--catalog", cat).code == 0

    def restored(*args: str) -> set[str]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        r = run_cli("restore", "--target", str(out), "--catalog", cat, *args)
        assert r.code == 0, r.err
        root = restored_root(out, src)
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    assert restored("--include", f"{src}/**/x.conf") == {
        "x.conf",
        "a/x.conf",
        "a/b/c/x.conf",
        "cache/x.conf",
    }
    assert restored("--include", f"{src}/**/x.conf", "--exclude", f"{src}/cache") == {
        "x.conf",
        "a/x.conf",
        "a/b/c/x.conf",
    }
    assert restored("--exclude", "*.conf", "--exclude", "*.bak") == {"a/b/keep.txt"}
    # today's behaviour: a glob against the path or a parent, '*' crossing '/'
    assert restored("--include", f"{src}/a/*") == {
        "a/x.conf",
        "a/b/c/x.conf",
        "a/b/keep.txt",
        "a/b/c/x.conf.bak",
    }
    assert restored("--include", f"{src}/a/b") == {
        "a/b/c/x.conf",
        "a/b/keep.txt",
        "a/b/c/x.conf.bak",
    }


# -- 7. no traceback: a catalog disk that fills up ---------------------------------------------


@pytest.mark.slow
@pytest.mark.root
def test_full_catalog_disk_is_one_line_and_no_complete_set(tmp_path, tmpfs):
    src = make_tree(tmp_path / "src", seed=8, files=300, max_size=20_000, big=(300_000,))
    small = tmpfs("catdisk", "2m")
    cat = str(small / "cat.sqlite")
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    gate = Gate(tmp_path / "gate")
    slow = f"faulty+file://{d1}?pause_after=64K&gate={gate}"
    proc = start("backup", str(src), "-d", str(d0), "-d", slow, "--catalog", cat)
    try:
        gate.wait_paused(proc)
        fill_up(small)
        gate.open()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("parbackup: error: "), err
    assert cat in err and ("full" in err or "No space" in err), err
    (small / "filler").unlink()
    r = run_cli("sets", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert all(s["status"] != "complete" for s in r.json["sets"]), r.json
