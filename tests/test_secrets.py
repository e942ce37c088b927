"""Credentials in device URLs never reach logs, the catalog, --json output, devices or
error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import make_tree, run_cli
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

SECRETS = ("pw-SECRET-one", "tok-SECRET-two", "key-SECRET-three")


def secret_urls(devs: list[Path]) -> list[str]:
    """Secrets in the user part (a query option no kind knows is a usage error now)."""
    return [
        f"file://user:{SECRETS[0]}@{devs[0]}",
        f"file://user:{SECRETS[2]}@{devs[1]}",
    ]


def assert_clean(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for s in SECRETS:
            assert s.encode() not in data, f"{s} leaked: {data[:300]!r}"


def every_file_under(*roots: Path) -> list[bytes]:
    return [p.read_bytes() for r in roots for p in r.rglob("*") if p.is_file()]


def test_secrets_stay_out_of_every_output(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=5, files=12)
    devs = device_dirs(2)
    urls = secret_urls(devs)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for u in urls for a in ("-d", u)]
    outputs = []
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    outputs += [r.out, r.err]
    for args in (
        ("sets", "--json"),
        ("verify", *dargs, "--json"),
        ("restore", "--target", str(tmp_path / "out"), *dargs, "--json"),
        ("prune", "--orphans", *dargs, "--json"),
        ("rebuild-catalog", *dargs, "--json"),
    ):
        extra = () if args[0] == "rebuild-catalog" else ("--catalog", cat)
        if args[0] == "rebuild-catalog":
            extra = ("--catalog", str(tmp_path / "rebuilt.sqlite"))
        r = run_cli(*args, *extra)
        assert r.code == 0, (args, r.out, r.err)
        outputs += [r.out, r.err]
    assert_clean(*outputs, *every_file_under(tmp_path / "dev0", tmp_path / "dev1"))
    assert_clean(Path(cat).read_bytes(), (tmp_path / "rebuilt.sqlite").read_bytes())


@pytest.mark.parametrize(
    "case",
    ["duplicate", "missing", "bad-port", "unknown-kind"],
)
def test_secrets_stay_out_of_error_messages(tmp_path, device_dirs, case):
    devs = device_dirs(2)
    urls = secret_urls(devs)
    bad = {
        "duplicate": [urls[0], urls[0]],
        "missing": [f"file://{tmp_path}/nope?token={SECRETS[1]}", urls[1]],
        "bad-port": [f"sftp://u:{SECRETS[0]}@host:99999/x", urls[1]],
        "unknown-kind": [f"ftp://u:{SECRETS[0]}@host/x?token={SECRETS[1]}", urls[1]],
    }[case]
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    cat = str(tmp_path / "cat.sqlite")
    for as_json in ((), ("--json",)):
        r = run_cli(
            "backup", str(src), *[a for u in bad for a in ("-d", u)], "--catalog", cat, *as_json
        )
        assert r.code != 0 or case == "missing"
        assert r.out + r.err
        assert_clean(r.out, r.err)
    if Path(cat).exists():
        assert_clean(Path(cat).read_bytes())


def test_secrets_stay_out_of_logs(tmp_path, device_dirs, caplog):
    tree = make_tree(tmp_path / "src", seed=6, files=6)
    devs = device_dirs(2)
    urls = [*secret_urls(devs), f"file://user:{SECRETS[1]}@{tmp_path}/gone"]
    caplog.set_level(logging.DEBUG)
    with Catalog(str(tmp_path / "cat.sqlite")) as catalog:
        report = run_backup([str(tree)], urls, catalog)
    assert report.status == "degraded"
    assert caplog.records, "the failed device should have been logged"
    assert_clean(caplog.text, str(report.to_json()))


def test_sftp_password_stays_out_of_errors(sshd, tmp_path):
    url = f"sftp://{sshd.user}:{SECRETS[0]}@{sshd.host}:{sshd.port}/tmp/x?known_hosts={sshd.known_hosts}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    r = run_cli(
        "backup",
        str(src),
        "-d",
        url,
        "-d",
        str(tmp_path),
        "--catalog",
        str(tmp_path / "c.sqlite"),
        "--json",
    )
    assert r.out + r.err
    assert_clean(r.out, r.err)
