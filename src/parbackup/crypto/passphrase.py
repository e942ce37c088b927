"""Where a passphrase comes from, in this order: ``--password-file``,
``--password-command``, ``$PARBACKUP_PASSWORD_FILE``, ``$PARBACKUP_PASSWORD``, else a
prompt on the terminal (the caller supplies it: only the CLI talks to the user).

A file or a command's output gives the passphrase up to its first newline (a trailing
newline is not part of it). Nothing here logs or echoes a passphrase.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from parbackup.errors import KeyUnlockError, UsageError

ENV_FILE = "PARBACKUP_PASSWORD_FILE"
ENV_PASSWORD = "PARBACKUP_PASSWORD"
_MAX = 64 * 1024
_COMMAND_SECONDS = 60


@dataclass(frozen=True)
class PassphraseSource:
    """How the user said to get the passphrase (from the command line)."""

    file: str | None = None
    command: str | None = None

    def describe(self, env: Mapping[str, str] | None = None) -> str:
        """Where the passphrase would come from (for messages; never the passphrase)."""
        env = os.environ if env is None else env
        if self.file:
            return f"--password-file {self.file}"
        if self.command:
            return "--password-command"
        if env.get(ENV_FILE):
            return f"${ENV_FILE}"
        if env.get(ENV_PASSWORD):
            return f"${ENV_PASSWORD}"
        return "the terminal"

    def get(
        self,
        prompt: Callable[[], bytes] | None,
        env: Mapping[str, str] | None = None,
    ) -> bytes:
        """The passphrase; UsageError when none is given and there is no terminal."""
        env = os.environ if env is None else env
        if self.file:
            return _from_file(self.file)
        if self.command:
            return _from_command(self.command)
        if env.get(ENV_FILE):
            return _from_file(env[ENV_FILE])
        if env.get(ENV_PASSWORD):
            return env[ENV_PASSWORD].encode()
        if prompt is None:
            raise UsageError(
                "a passphrase is needed: give --password-file, --password-command, "
                f"${ENV_FILE} or ${ENV_PASSWORD} (no terminal to ask on)"
            )
        return prompt()


def _first_line(data: bytes) -> bytes:
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def _from_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX)
    except OSError as exc:
        raise KeyUnlockError(f"{path}: cannot read the password file: {exc.strerror}") from exc
    return _first_line(data)


def _from_command(command: str) -> bytes:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--password-command: {exc}") from exc
    if not argv:
        raise UsageError("--password-command is empty")
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_COMMAND_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeyUnlockError(f"--password-command {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise KeyUnlockError(
            f"--password-command {argv[0]} failed with exit status {done.returncode}"
        )
    return _first_line(done.stdout[:_MAX])
