"""The ``parbackup`` program: a click group dispatching to one module per command.

The entry points run cli/early.py first: a backup's fork server is started there,
before this module's imports."""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import sys

import click

from parbackup import __version__
from parbackup.cli.common import (
    broken_pipe_exit,
    describe,
    fail,
    ignore_stopping_signals,
    install_signal_handlers,
    interrupt_exit_code,
    stdout_is_broken,
    usage_exit,
)
from parbackup.cli.logs import global_options
from parbackup.errors import EXIT_FAILED, UsageError

COMMANDS = {
    "backup": "parbackup.cli.backup:backup",
    "plan": "parbackup.cli.plan:plan",
    "restore": "parbackup.cli.restore:restore",
    "verify": "parbackup.cli.verify:verify",
    "sets": "parbackup.cli.sets:sets",
    "files": "parbackup.cli.files:files",
    "prune": "parbackup.cli.prune:prune",
    "forget": "parbackup.cli.forget:forget_command",
    "rebuild-catalog": "parbackup.cli.rebuild_catalog:rebuild",
    "relabel": "parbackup.cli.relabel:relabel",
    "key": "parbackup.cli.keys:key",
    "ls": "parbackup.cli.ls:ls",
    "diff": "parbackup.cli.diff:diff",
    "find": "parbackup.cli.find:find",
    "report": "parbackup.cli.report:report",
    "repair": "parbackup.cli.repair:repair",
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
        command: click.Command = getattr(importlib.import_module(module), attr)
        if not any(p.name == "quiet" for p in command.params):
            command.params.extend(global_options())  # -v/-q/--log-file after it too
        return command


log = logging.getLogger("parbackup.cli")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parbackup")
def cli() -> None:
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
      parbackup forget --keep-daily 7 --prune              # retention, reclaim space
      parbackup diff latest~1 latest                       # what changed
      parbackup backup --profile home                      # options from config.toml

    \b
    Exit status:
      0    done
      3    done with warnings (skipped files, a failed device)
      1    failed
      2    bad usage
      130  interrupted by SIGINT (Ctrl-C)
      143  terminated by SIGTERM (systemd, kill): handled like Ctrl-C
      129  hung up (SIGHUP: the terminal closed), handled the same way
      141  stdout closed early (broken pipe)

    An interrupted backup is recorded as interrupted, never complete; run it again to
    resume, or 'parbackup prune' to remove what it wrote.
    """


cli.params.extend(global_options())


def main() -> None:
    """Console-script entry point: every way out is one line and a documented exit code."""
    install_signal_handlers()
    # the last thing at exit: the interpreter's final collection would walk every object
    # of every module imported (half a second or more once Dask is): nothing is left then
    # that needs it, so it is skipped
    atexit.register(gc.freeze)
    as_json = "--json" in sys.argv[1:]
    try:
        code = cli.main(prog_name="parbackup", standalone_mode=False)
    except click.exceptions.Abort:  # click turns an interrupt while parsing into Abort
        ignore_stopping_signals()
        fail("interrupted", interrupt_exit_code(), as_json, status="interrupted")
    except KeyboardInterrupt as exc:
        ignore_stopping_signals()
        fail("interrupted", interrupt_exit_code(exc), as_json, status="interrupted")
    except click.ClickException as exc:
        if as_json:
            usage_exit(exc.format_message(), as_json)
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:  # raised while parsing (--log-file)
        usage_exit(str(exc), as_json)
    except BrokenPipeError as exc:
        if stdout_is_broken():
            broken_pipe_exit()
        fail(describe(exc), EXIT_FAILED, as_json)
    except Exception as exc:  # the last resort: never a traceback
        log.debug("unexpected error", exc_info=True)
        fail(describe(exc), EXIT_FAILED, as_json)
    sys.exit(code if isinstance(code, int) else 0)
