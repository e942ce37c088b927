"""A throwaway PostgreSQL cluster from the Debian package, for the shared-catalog tests.

``initdb`` makes a cluster in a temporary directory (as the ``postgres`` user when run as
root: the server refuses to run as root); ``pg_ctl`` starts it on loopback on a free port
with a private socket directory, and stops it (``-m immediate``) at the end. TCP
connections need the password (scram), so URLs carry one, as users' do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from servers import free_port

PASSWORD = "s3cret-pg"


def pg_bin() -> str | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=os.path.getmtime)
    return os.path.dirname(found[-1]) if found else None


class PgServer:
    """One PostgreSQL cluster; ``url(db)`` names a database in it."""

    def __init__(self, *, fsync: bool = False, parent: str | None = None) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries are missing (Debian 'postgresql')")
        os.makedirs(parent or "/tmp/pg", exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="cluster-", dir=parent or "/tmp/pg"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.port = free_port()
        self.fsync = fsync
        self.as_postgres = os.geteuid() == 0
        self.started = False

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> PgServer:
        self.sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            pg = pwd.getpwnam("postgres")
            for p in (self.root, self.sock, pwfile):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        self._run(
            f"{self.bin}/initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=50"
        )
        self._run(
            f"{self.bin}/pg_ctl", "-D", str(self.data), "-o", opts, "-l",
            str(self.root / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.started = True
        return self

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; its output."""
        cmd = [f"{self.bin}/psql", "-h", str(self.sock), "-p", str(self.port), "-U", "postgres"]
        cmd += ["-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
        out = subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return out.stdout.decode()

    def create_db(self, name: str) -> str:
        """A new, empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
