"""Configuration mistakes are usage errors (exit 2) before anything is written; an
unreachable device stays a device failure (exit 3) (issue 11, a newcomer's rough edges).

Also: a relative directory device is stored as an absolute path, so ``verify`` run from
another directory finds the same device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SRC, make_tree, run_cli
from parbackup.devices.url import parse_url
from parbackup.errors import UsageError

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


def _backup(tmp_path, good, bad: str):
    tree = make_tree(tmp_path / "src", seed=41, files=5)
    cat = str(tmp_path / "cat.sqlite")
    return run_cli("backup", str(tree), "-d", str(good), "-d", bad, "--catalog", cat, "--json")


def _mistakes(tmp_path):
    plain = tmp_path / "plain-file"
    plain.write_bytes(b"not a directory")
    (tmp_path / "a-dir").mkdir()
    return {
        "directory-is-a-file": (str(plain), "not a directory"),
        "file-url-is-a-file": (f"file://{plain}", "not a directory"),
        "s3-without-bucket": ("s3:///prefix", "no bucket"),
        "sftp-without-host": ("sftp:///srv/backup", "no host"),
        "tape-is-a-directory": (f"tape://{tmp_path / 'a-dir'}", "a directory, not a tape"),
        "unknown-option": (f"{tmp_path / 'a-dir'}?limt=1K", "unknown option limt"),
        "unknown-option-tape": (f"tape://{tmp_path}/t.img?blok=1M", "unknown option blok"),
        "bad-option-value": (f"tape://{tmp_path}/t.img?wait=soon", "bad option value"),
        "bad-size": (f"{tmp_path / 'a-dir'}?capacity=lots", "not a size"),
    }


CASES = [
    "directory-is-a-file",
    "file-url-is-a-file",
    "s3-without-bucket",
    "sftp-without-host",
    "tape-is-a-directory",
    "unknown-option",
    "unknown-option-tape",
    "bad-option-value",
    "bad-size",
]


@pytest.mark.parametrize("case", CASES)
def test_configuration_mistake_is_a_usage_error(tmp_path, device_dirs, case):
    (good,) = device_dirs(1)
    url, message = _mistakes(tmp_path)[case]
    r = _backup(tmp_path, good, url)
    assert r.code == 2, r.out + r.err
    assert r.json["status"] == "failed" and message in r.json["error"], r.json
    assert list(good.iterdir()) == []  # nothing was written to the good device
    assert (tmp_path / "plain-file").read_bytes() == b"not a directory"
    assert list((tmp_path / "a-dir").iterdir()) == []
    assert "Traceback" not in r.err


def test_unreachable_device_stays_a_device_failure(tmp_path, device_dirs):
    (good,) = device_dirs(1)
    r = _backup(tmp_path, good, str(tmp_path / "not" / "mounted"))
    assert r.code == 3, r.out + r.err
    assert [d["status"] for d in r.json["devices"]] == ["ok", "failed"]


def test_parse_url_makes_relative_directories_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_url("d0?capacity=1M").raw == f"{tmp_path}/d0?capacity=1M"
    assert parse_url("file://d0/x").path == f"{tmp_path}/d0/x"
    assert parse_url("file://d0/x").display == f"file://{tmp_path}/d0/x"
    assert parse_url("/abs/d1").raw == "/abs/d1"
    assert parse_url("file:///abs/d1").raw == "file:///abs/d1"
    with pytest.raises(UsageError):
        parse_url("file://")


def _cli_in(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "parbackup", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("form", ["plain", "file-url"])
def test_relative_device_path_is_stored_absolute(tmp_path, form):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    (here / "disks" / "d0").mkdir(parents=True)
    elsewhere.mkdir()
    tree = make_tree(tmp_path / "src", seed=42, files=12)
    cat = str(tmp_path / "cat.sqlite")
    url = "disks/d0" if form == "plain" else "file://disks/d0"
    r = _cli_in(here, "backup", str(tree), "-d", url, "--catalog", cat, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (here / "disks" / "d0" / "label.json").exists()
    stored = json.loads(r.stdout)["devices"][0]["url"]
    assert stored == ("" if form == "plain" else "file://") + str(here / "disks" / "d0")
    r = _cli_in(elsewhere, "verify", "--catalog", cat, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["status"] == "ok"
    assert not (elsewhere / "disks").exists()
