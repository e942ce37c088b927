"""Numbers on the command line (and in a profile) that are not numbers, or not finite.

``--device-timeout nan`` passed click's range check (every comparison with nan is
false): the backup then spun at full CPU for ever, never giving a device up nor ending
(found in session 17: killed after ten minutes). ``inf`` (or ``1e309``) was an internal
error (OverflowError), and ``prune --max-unused nan`` ran as if no limit were given.
Each is a usage error now (exit 2), before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "1e309", "-inf", "5e7", "2e6"])
def test_a_device_timeout_that_is_no_finite_number_is_refused(
    tmp_path: Path, device_dirs, value
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    devs = device_dirs(2)
    cat = tmp_path / "cat.sqlite"
    args = ["backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", str(cat)]
    r = run_cli(*args, "--device-timeout", value, timeout=120)
    assert r.code == 2, (r.code, r.err)
    assert "--device-timeout" in r.err and "internal error" not in r.err
    assert not cat.exists()


def test_a_timeout_in_a_profile_that_is_nan_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[profiles.p]\nsources = ["/nonexistent"]\ndevice-timeout = nan\n')
    r = run_cli("backup", "--profile", "p", "--config", str(config), timeout=120)
    assert r.code == 2 and "profiles.p.device-timeout: " in r.err and "nan is not a number" in r.err


@pytest.mark.parametrize("command", [("prune",), ("forget", "--keep-last", "1", "--prune")])
def test_max_unused_nan_is_refused(tmp_path: Path, command) -> None:
    r = run_cli(*command, "--max-unused", "nan", "--catalog", str(tmp_path / "c.sqlite"))
    assert r.code == 2 and "--max-unused" in r.err and "is not a number" in r.err, r.err
