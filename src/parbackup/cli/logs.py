"""``-v``, ``-q`` and ``--log-file``: how much the CLI prints and where the log goes.

They are accepted before the command (``parbackup -q backup ...``) and after it
(``parbackup backup ... -q``), as a newcomer types them. The library logs to the
``parbackup`` logger and never configures it; only this module attaches handlers:
stderr at INFO (``-v``) or DEBUG (``-vv``), and a file (``--log-file``) at every level.
Log lines carry the CLI's one time format, ISO 8601 UTC.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import click

from parbackup.cli.render import QUIET, printable, set_verbosity
from parbackup.errors import UsageError

_state: dict[str, Any] = {"verbose": 0, "quiet": False, "log_file": None, "lost": ""}
_handlers: list[logging.Handler] = []


class _LogFile(logging.FileHandler):
    """``--log-file``'s handler. A line it cannot write (a full disk, a quota, an I/O
    error) is said once on stderr, even under ``-q``, and the command goes on: the log
    is not the data. ``lost_log`` gives the line for a command's JSON result. (The
    logging module's own handling printed nothing, ``raiseExceptions`` being off.)"""

    def handleError(self, record: logging.LogRecord) -> None:
        if _state["lost"]:
            return
        exc = sys.exc_info()[1]
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _state["lost"] = f"--log-file {self.baseFilename}: {why}: log lines are lost from here on"
        with contextlib.suppress(Exception):  # stderr itself may be gone
            click.echo(f"parbackup: warning: {printable(_state['lost'])}", err=True)


def lost_log() -> str:
    """Why ``--log-file`` lost lines in this process ("" when it lost none)."""
    return str(_state["lost"])


class _UTCFormatter(logging.Formatter):
    """Log lines stamped in the CLI's one time format: ISO 8601, UTC."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(record.created))


def configure() -> None:
    """(Re)attach the handlers the options ask for; the earlier ones are closed."""
    logging.raiseExceptions = False  # a failing log handler never prints a traceback
    root = logging.getLogger("parbackup")
    for h in _handlers:
        root.removeHandler(h)
        with contextlib.suppress(Exception):
            h.close()
    _handlers.clear()
    verbose, quiet, log_file = _state["verbose"], _state["quiet"], _state["log_file"]
    set_verbosity(QUIET if quiet else verbose)
    fmt = _UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose and not quiet:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        _handlers.append(err)
    if log_file:
        try:
            handler = _LogFile(log_file, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from exc
        handler.setLevel(logging.DEBUG)
        _handlers.append(handler)
    for h in _handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    if _handlers:
        root.setLevel(min(h.level for h in _handlers))


def _setter(key: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:  # not given here: keep what the other place (group or command) said
            _state[key] = max(value, _state[key]) if key == "verbose" else value
            configure()

    return callback


def global_options() -> list[click.Option]:
    """Fresh ``-v``/``-q``/``--log-file`` options, for the group and for each command."""
    return [
        click.Option(
            ["--verbose", "-v"],
            count=True,
            expose_value=False,
            callback=_setter("verbose"),
            help="More detail on stderr: -v the log at INFO, -vv DEBUG.",
        ),
        click.Option(
            ["--quiet", "-q"],
            is_flag=True,
            expose_value=False,
            callback=_setter("quiet"),
            help="Print only problems and errors: no progress, notices or summaries "
            "(--json still prints its document).",
        ),
        click.Option(
            ["--log-file"],
            metavar="PATH",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_setter("log_file"),
            help="Append parbackup's log (every level, ISO 8601 UTC times) to PATH. A "
            "line it cannot write (a full disk) is said once on stderr and in --json "
            "(log_file_error); the command goes on.",
        ),
    ]
