"""The ``parbackup`` program: a click group dispatching to one module per command."""

from __future__ import annotations

import importlib
import logging
import sys
import time

import click

from parbackup import __version__
from parbackup.cli.common import (
    broken_pipe_exit,
    describe,
    fail,
    install_signal_handlers,
    interrupt_exit_code,
    usage_exit,
)
from parbackup.cli.render import QUIET, set_verbosity
from parbackup.errors import EXIT_FAILED, UsageError

COMMANDS = {
    "backup": "parbackup.cli.backup:backup",
    "plan": "parbackup.cli.plan:plan",
    "restore": "parbackup.cli.restore:restore",
    "verify": "parbackup.cli.verify:verify",
    "sets": "parbackup.cli.sets:sets",
    "files": "parbackup.cli.files:files",
    "prune": "parbackup.cli.prune:prune",
    "rebuild-catalog": "parbackup.cli.rebuild_catalog:rebuild",
    "relabel": "parbackup.cli.relabel:relabel",
}
"""Command name -> where it lives; a command's module is imported only when it runs
(or when --help lists them), so a backup does not load restore's code."""


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (see ``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


log = logging.getLogger("parbackup.cli")


class _UTCFormatter(logging.Formatter):
    """Log lines stamped in the CLI's one time format: ISO 8601, UTC."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(record.created))


def setup_logging(verbose: int, quiet: bool, log_file: str | None) -> None:
    """Send the ``parbackup`` logger to stderr (-v INFO, -vv DEBUG) and/or a file."""
    logging.raiseExceptions = False  # a failing log handler never prints a traceback
    root = logging.getLogger("parbackup")
    fmt = _UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    levels = []
    if verbose and not quiet:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        err.setFormatter(fmt)
        root.addHandler(err)
        levels.append(err.level)
    if log_file:
        try:
            handler = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise UsageError(f"--log-file {describe(exc)}") from exc
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(fmt)
        root.addHandler(handler)
        levels.append(logging.DEBUG)
    if levels:
        root.setLevel(min(levels))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parbackup")
@click.option(
    "--verbose", "-v", count=True, help="More detail on stderr: -v the log at INFO, -vv DEBUG."
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only problems and errors: no progress, notices or summaries "
    "(--json still prints its document).",
)
@click.option(
    "--log-file",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append parbackup's log (every level, ISO 8601 UTC times) to PATH.",
)
def cli(verbose: int, quiet: bool, log_file: str | None) -> None:
    """Parallel backup: spread one backup over several devices at once.

    Files are split into segments so every device gets an equal share of the bytes,
    all devices are written concurrently, a device that fails mid-backup has its
    work redirected to the others, and restore reassembles the segments.

    \b
    Typical use:
      parbackup plan   /srv -d /mnt/d1 -d /mnt/d2          # dry run: see the split
      parbackup backup /srv -d /mnt/d1 -d /mnt/d2          # back up
      parbackup sets                                       # list backup sets
      parbackup verify                                     # check the latest set
      parbackup restore --target /tmp/r                    # restore the latest set

    \b
    Exit status:
      0    done
      3    done with warnings (skipped files, a failed device)
      1    failed
      2    bad usage
      130  interrupted by SIGINT (Ctrl-C)
      143  terminated by SIGTERM (systemd, kill): handled like Ctrl-C
      141  stdout closed early (broken pipe)

    An interrupted backup is recorded as interrupted, never complete; run it again to
    resume, or 'parbackup prune --orphans' to remove what it wrote.
    """
    set_verbosity(QUIET if quiet else verbose)
    setup_logging(verbose, quiet, log_file)
    log.debug("parbackup %s: %s", __version__, " ".join(sys.argv[1:]))


def main() -> None:
    """Console-script entry point: every way out is one line and a documented exit code."""
    install_signal_handlers()
    as_json = "--json" in sys.argv[1:]
    try:
        code = cli.main(prog_name="parbackup", standalone_mode=False)
    except click.exceptions.Abort:  # click turns an interrupt while parsing into Abort
        fail("interrupted", interrupt_exit_code(), as_json, status="interrupted")
    except KeyboardInterrupt as exc:
        fail("interrupted", interrupt_exit_code(exc), as_json, status="interrupted")
    except click.ClickException as exc:
        if as_json:
            usage_exit(exc.format_message(), as_json)
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:  # raised by the group itself (--log-file)
        usage_exit(str(exc), as_json)
    except BrokenPipeError:
        broken_pipe_exit()
    except Exception as exc:  # the last resort: never a traceback
        log.debug("unexpected error", exc_info=True)
        fail(describe(exc), EXIT_FAILED, as_json)
    sys.exit(code if isinstance(code, int) else 0)
