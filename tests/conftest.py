"""Shared test helpers: running the CLI as a real process, building trees, comparing."""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

SRC = str(Path(__file__).resolve().parent.parent / "src")


# No per-example deadline for property tests (hypothesis's default is 200 ms): the suite
# shares two cores with servers and workers, and timing is never what they test; an
# example that ran long once would fail a run at random.
settings.register_profile("parbackup", deadline=None)
settings.load_profile("parbackup")

# The machine's own /etc/fstab is not the tests' business: a host whose fstab lists a
# directory the tests write under (/tmp as a tmpfs that is not mounted) would have every
# new device refused (devices/mounts.py). Tests of that check give their own fstab file.
os.environ["PARBACKUP_FSTAB"] = os.devnull


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile the checkout's sources once, before any test starts a parbackup process.

    With PYTHONDONTWRITEBYTECODE set (as in this workplace), every process the suite
    starts, each CLI call and each mover and reader, compiled every module it imported
    from source: about 0.13 s of CPU more per CLI call (0.21 s against 0.34 s to import
    the backup command), over a thousand processes a run. Python still reads .pyc files
    with that variable set, and ignores a stale one. An xdist worker leaves it to the
    controller.
    """
    if not hasattr(session.config, "workerinput"):
        compileall.compile_dir(SRC, quiet=2)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session):
    """Let pytest keep the test modules it rewrote (tests/**/__pycache__), as it does
    where PYTHONDONTWRITEBYTECODE is unset.

    pytest rewrites the asserts of every test module as it imports it, and caches the
    result only when bytecode may be written: with the variable set (as in this
    workplace) each xdist worker rewrote all ~150 test modules on every run, about 1.9 s
    of CPU a worker (collecting took 3.3 CPU s, 1.5 with the cache). Only collection
    runs with writing on: the processes the tests start still see the variable.
    """
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = saved


@dataclass
class CliResult:
    """What a parbackup process did."""

    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def run_cli(
    *args: str, env: dict | None = None, input: bytes | None = None, timeout: float = 300
) -> CliResult:
    """Run ``python -m parbackup ARGS`` from this checkout's src; never raises on exit code."""
    full_env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", *args],
        capture_output=True,
        env=full_env,
        timeout=timeout,
        input=input,
    )
    return CliResult(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def make_tree(
    root: Path,
    *,
    seed: int = 0,
    files: int = 40,
    max_size: int = 300_000,
    big: tuple[int, ...] = (),
) -> Path:
    """A tree of random files, subdirectories, empty files, symlinks and ``big`` files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root]
    for i in range(files):
        if rng.random() < 0.2:
            d = rng.choice(dirs) / f"dir{i}"
            d.mkdir()
            dirs.append(d)
        parent = rng.choice(dirs)
        size = 0 if rng.random() < 0.1 else rng.randint(1, max_size)
        p = parent / f"file{i}.bin"
        p.write_bytes(rng.randbytes(size))
        p.chmod(rng.choice([0o644, 0o600, 0o755, 0o640]))
        os.utime(p, ns=(rng.randint(1, 2**40) * 1000, rng.randint(1, 2**40) * 1000))
    for j, size in enumerate(big):
        p = root / f"big{j}.bin"
        with open(p, "wb") as fh:
            left = size
            while left:
                n = min(left, 1 << 20)
                fh.write(rng.randbytes(n))
                left -= n
    os.symlink("file0.bin", root / "link-to-file0")
    os.symlink("/nonexistent/target", root / "dangling")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Relative path -> (kind, mode, mtime_ns or None, content or link target)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, Path(p).read_bytes())
    return out


def restored_root(target: Path, source: Path) -> Path:
    """Where ``source`` comes back under a restore ``target``."""
    return target / str(source.resolve()).lstrip("/")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small random tree with a few hundred KiB of data."""
    return make_tree(tmp_path / "src", seed=1)


@pytest.fixture
def device_dirs(tmp_path: Path):
    """A factory for n empty device directories."""

    def make(n: int) -> list[Path]:
        out = []
        for i in range(n):
            d = tmp_path / f"dev{i}"
            d.mkdir()
            out.append(d)
        return out

    return make


# -- servers (tests/servers.py), started once per session ------------------------------------


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback; skips where sshd is missing or cannot run."""
    from servers import SSHD, SshServer

    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH sshd (Debian openssh-server; see scripts/setup)")
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback, with AWS settings pointing at it in os.environ."""
    pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    from servers import S3Server

    with S3Server() as server, environ(server.env):
        yield server


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster on loopback (tests/pgserver.py), for the session."""
    pytest.importorskip("psycopg", reason="needs psycopg (the postgres extra)")
    from pgserver import PgServer, pg_bin

    if pg_bin() is None:
        pytest.skip("needs the PostgreSQL server (Debian postgresql; see scripts/setup)")
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """The URL of a new, empty database in ``pg_server`` for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return pg_server.create_db(name)


def default_signals() -> None:
    """``preexec_fn`` for a parbackup started to be interrupted by a test: SIGINT, SIGTERM
    and SIGHUP at their defaults. A runner under ``nohup`` or started with ``&`` without
    job control passes them ignored, and parbackup then rightly keeps ignoring them."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def backup_imports(tmp_path, *extra: str) -> list[str]:
    """The modules every process of ``backup SRC -d D1 -d D2 EXTRA`` imported (repeats
    kept: one line per process that imported it)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"plain\n")
    (src / "b.log").write_bytes(b"left out\n")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    args = [a for d in devs for a in ("-d", str(d))]
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "backup", str(src), *args, *extra,
         "--catalog", str(tmp_path / "c.sqlite"), "--json"],
        env={**os.environ, "PYTHONPATH": SRC, "PYTHONPROFILEIMPORTTIME": "1",
             "PARBACKUP_DEBUG_WORKERS": "1"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]  # fmt: skip
    assert imported.count("parbackup.workers") >= 2, "the dispatcher's and the movers' server's"
    return imported


@contextlib.contextmanager
def environ(env: dict[str, str]):
    """``env`` set in os.environ (so child processes inherit it) while the block runs;
    what was there before is put back, unset names unset again."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
