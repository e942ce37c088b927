"""What every command shares: catalog option, --json, error handling, exit codes.

Exit codes (the CLI contract): 0 ok, 3 done with warnings, 1 failed, 2 bad usage,
130 interrupted by SIGINT (Ctrl-C), 143 terminated by SIGTERM, 129 by SIGHUP, 141 stdout
closed early (a broken pipe). Every error is one line on stderr (``parbackup: error:
...``), or under ``--json`` one object ``{"status": "failed", "error": ..., "exit_code":
N}`` on stdout.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import select
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from parbackup import __version__
from parbackup.catalog import Catalog, default_catalog_path, is_catalog_url
from parbackup.catalog import open_catalog as open_catalog_at
from parbackup.cli.logs import lost_log
from parbackup.cli.render import printable
from parbackup.devices.url import human_bytes as human_bytes  # the commands' import
from parbackup.devices.url import redact
from parbackup.engine.devices import accept_new_host_keys
from parbackup.errors import EXIT_FAILED, EXIT_USAGE, EXIT_WARNINGS, ParbackupError

log = logging.getLogger("parbackup.cli")

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class CatalogName(click.ParamType):
    """A catalog file (resolved to its real, absolute path) or a ``postgresql://`` URL."""

    name = "catalog"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str) and is_catalog_url(value):
            return value
        return click.Path(dir_okay=False, resolve_path=True).convert(value, param, ctx)


catalog_option = click.option(
    "--catalog",
    "catalog_path",
    type=CatalogName(),
    default=None,
    envvar="PARBACKUP_CATALOG",
    help="Catalog file (SQLite), or postgresql://USER@HOST/DB for a catalog shared by "
    "many hosts (docs/CLUSTER.md). Default: $PARBACKUP_CATALOG, else catalog.sqlite in "
    "your data directory (~/.local/share/parbackup). Symlinks and relative paths are "
    "resolved: the catalog is known by its real, absolute path.",
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object on stdout and nothing else; it always has a 'status'.",
)


def devices_option(help: str, required: bool = True) -> Callable:
    """``--device/-d URL``, repeatable: the devices a command writes or reads, or where
    devices of the catalog moved (``required=False``)."""
    return click.option(
        "--device", "-d", "devices", multiple=True, required=required, metavar="URL", help=help
    )


class NumberRange(click.FloatRange):
    """A FloatRange that refuses ``nan`` (every comparison with it is false, so a range
    let it through: ``backup --device-timeout nan`` spun for ever, never giving a hung
    device up, and ``inf`` was an internal error)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def max_unused_option(help: str) -> Callable:
    """``--max-unused PERCENT``: prune's, and forget's with --prune."""
    return click.option(
        "--max-unused",
        type=NumberRange(0, 100),
        default=0,
        metavar="PERCENT",
        show_default=True,
        help=help,
    )


def _accept_new(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        accept_new_host_keys()


accept_new_host_keys_option = click.option(
    "--accept-new-host-keys",
    is_flag=True,
    expose_value=False,
    callback=_accept_new,
    envvar="PARBACKUP_ACCEPT_NEW_HOST_KEYS",
    help="Trust the host key of an SFTP host seen for the first time and add it to the "
    "known-hosts file (like OpenSSH accept-new). A changed host key is always refused.",
)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM (see ``install_signal_handlers``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_last_signal = signal.SIGINT


_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum: int, frame: object) -> None:
    global _last_signal
    _last_signal = signum
    for other in _STOPPING:  # the first one stops the command; those that follow (Ctrl-C
        if signal.getsignal(other) is _on_signal:  # again) must not cut its way out short
            signal.signal(other, _once_stopping)
    raise Interrupted(signum)


def _once_stopping(signum: int, frame: object) -> None:
    """A stopping signal after the first: the command is already on its way out (its
    set recorded interrupted, its workers ended: each step bounded), so it is ignored."""


def ignore_stopping_signals() -> None:
    """At the very end of an interrupted command: ignored by the kernel, not by Python,
    whose handlers the interpreter's shutdown takes away (a signal then killed the
    process, exit -2, after it had printed its line). No command starts after this."""
    sys.unraisablehook = _quiet_about_ignored_signals
    for other in _STOPPING:
        if signal.getsignal(other) in (_on_signal, _once_stopping):
            signal.signal(other, signal.SIG_IGN)


def _quiet_about_ignored_signals(unraisable: Any) -> None:
    """A signal that arrived just as its handler became SIG_IGN is reported by Python as
    an unraisable "Signal 2 ignored due to race condition", with a traceback: here,
    ignoring it is what was asked, so it is not printed (any other is)."""
    exc = unraisable.exc_value
    if isinstance(exc, OSError) and "ignored due to race condition" in str(exc):
        return
    sys.__unraisablehook__(unraisable)


def install_signal_handlers() -> None:
    """SIGTERM (systemd, kill) and SIGHUP (a closed terminal) stop a command the way
    Ctrl-C does; a signal the caller set to be ignored (``nohup``, ``&``) stays ignored."""
    for signum in _STOPPING:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)


def interrupt_exit_code(exc: BaseException | None = None) -> int:
    """128 + the signal number, as shells report it (130 SIGINT, 143 SIGTERM)."""
    signum = exc.signum if isinstance(exc, Interrupted) else _last_signal
    return 128 + int(signum)


# Catalogs this process opened (real path -> opened for writing). After an interruption
# or a failure, a set a written one was left 'running' in is marked 'interrupted' at once
# (not only by the next run); an error escaping the catalog names its path.
_opened_catalogs: dict[str, bool] = {}
_catalog_targets: dict[str, str] = {}  # shown name -> what reopens it (a URL's password)
_catalog_objects: list[Catalog] = []  # what each began (Catalog.began), once closed too


def local_catalog_file(path: str | None) -> str:
    """The SQLite file the catalog ``path`` (or the default one) is, resolved; '' for a
    catalog on a server."""
    target = path or default_catalog_path()
    return "" if is_catalog_url(target) else os.path.realpath(target)


def open_catalog(path: str | None, *, create: bool) -> Catalog:
    """The catalog at ``path`` (or the default one); ``create`` means it will be written."""
    target = path or default_catalog_path()
    catalog = open_catalog_at(target, create=create)
    _opened_catalogs[catalog.path] = _opened_catalogs.get(catalog.path, False) or create
    _catalog_targets[catalog.path] = target
    if create:
        _catalog_objects.append(catalog)
    return catalog


def open_catalog_to_read(path: str | None) -> Catalog:
    """The catalog at ``path`` for a command that reads its sets' volumes (restore,
    verify, repair): its readers' lock held shared until it is closed, so no prune
    deletes or compacts a volume under it (catalog/runlock.py)."""
    catalog = open_catalog(path, create=False)
    try:
        catalog.read_lock.share()
    except BaseException:
        catalog.close()
        raise
    return catalog


def mark_dead_runs() -> str:
    """Mark a set this process left 'running' as 'interrupted'; never raises. What to
    add to the message of an interruption: that a set in progress is recorded as
    interrupted, or that the set this process made was complete before it (its catalog
    copies or clean-up were cut short), or nothing."""
    marked, ended = 0, []
    for path in [p for p, written in _opened_catalogs.items() if written]:
        target = _catalog_targets.get(path, path)
        began = {i for c in _catalog_objects if c.path == path for i in c.began}
        with contextlib.suppress(Exception), open_catalog_at(target, create=False) as catalog:
            marked += catalog.lock_for_run()  # newly taken: 'running' sets are of dead runs
            ended += [f"set {s.id} was already {s.status}" for s in catalog.sets() if s.id in began]
    if marked:
        return "; a set in progress is recorded as interrupted"
    if ended:
        return f"; {', '.join(ended)} (only what comes after it was cut short)"
    return ""


def iso_utc(ns: int) -> str:
    """A time in the one format the CLI prints: ISO 8601, UTC, whole seconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def status_of(code: int) -> str:
    """The ``status`` a JSON document without its own gets from the exit code."""
    return {0: "ok", EXIT_WARNINGS: "warnings"}.get(code, "failed")


def emit_json(doc: dict[str, Any], code: int = 0) -> None:
    """Write the command's one JSON object to stdout; it always carries ``status``."""
    if "status" not in doc:
        doc = {"status": status_of(code), **doc}
    if lost_log():  # said on stderr too, once
        doc = {**doc, "log_file_error": lost_log()}
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def fail(message: str, code: int, as_json: bool, status: str = "failed") -> NoReturn:
    """Report an error as one line (or one JSON document) and exit with ``code``."""
    log.error("%s (exit %d)", message, code)
    if as_json:
        emit_json({"status": status, "error": message, "exit_code": code})
    else:
        click.echo(f"parbackup: error: {printable(message)}", err=True)  # one line
    sys.exit(code)


def describe(exc: BaseException) -> str:
    """One line for an exception parbackup did not map itself, naming the path."""
    if type(exc).__module__ == "sqlite3":  # escaped the catalog: name the catalog
        return f"catalog {', '.join(_opened_catalogs) or '(unknown)'}: {exc}"
    if isinstance(exc, OSError):
        # a call on an open file descriptor names it by number: no name for a user
        names = [n for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes))]
        what = " -> ".join(os.fsdecode(n) for n in names)
        reason = exc.strerror or str(exc)
        return f"{what}: {reason}" if what else reason
    return f"internal error: {exc!r} (run with -vv or --log-file PATH for the details)"


def stdout_is_broken() -> bool:
    """True when nobody reads our stdout any more (the reader of its pipe has gone)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def broken_pipe_exit() -> NoReturn:
    """Stdout was closed early (``parbackup files | head``): exit quietly with 141."""
    with contextlib.suppress(OSError):  # stdout is gone: nothing more is written to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


def handle_errors(func: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body; map every way it can end to one message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        as_json = bool(kwargs.get("as_json", False))
        argv = " ".join(redact(a) for a in sys.argv[1:])  # no password reaches a log
        log.debug("parbackup %s: %s", __version__, argv)
        try:
            code = func(*args, **kwargs) or 0
        except ParbackupError as exc:
            mark_dead_runs()
            fail(str(exc), exc.exit_code, as_json)
        except KeyboardInterrupt as exc:
            note = mark_dead_runs()
            code = interrupt_exit_code(exc)
            name = signal.Signals(code - 128).name
            ignore_stopping_signals()
            fail(f"interrupted by {name}{note}", code, as_json, status="interrupted")
        except BrokenPipeError as exc:
            if stdout_is_broken():
                broken_pipe_exit()
            log.debug("broken pipe", exc_info=True)  # another pipe (a worker, a command)
            mark_dead_runs()
            fail(describe(exc), EXIT_FAILED, as_json)
        except Exception as exc:  # no traceback reaches a user: one line, details in the log
            log.debug("unexpected error", exc_info=True)
            mark_dead_runs()
            fail(describe(exc), EXIT_FAILED, as_json)
        sys.exit(code if isinstance(code, int) else EXIT_FAILED)

    return wrapper


def usage_exit(message: str, as_json: bool) -> NoReturn:
    """A usage error met outside a command body (click's own parsing)."""
    fail(message, EXIT_USAGE, as_json)
