"""The program's first module: a backup's fork server started before anything else.

A backup's movers and its scan helper are forks of one warm server (engine/movers.py),
a fresh interpreter that imports the mover: about 0.13 s of CPU, on the core the
controller leaves idle. The sooner it starts, the more of that runs beside the
controller's own start (click, the CLI's modules, the catalog: about 0.1 s of CPU)
instead of after it. So the entry points (``parbackup``, ``python -m parbackup``) come
here first: the command line is read only as far as it tells, before click parses it,
whether a backup will start movers here; this module imports nothing else before it
starts the server.
"""

from __future__ import annotations

import os
import sys

GROUP_VALUED = ("--log-file",)
"""The program's own options (cli/logs.py ``global_options``) that take a value: the
command's name may follow them."""


def movers_named(args: list[str]) -> int:
    """How many movers ``backup ARGS`` will start, as far as the command line tells
    before it is parsed: one per ``-d``/``--device``, less the ``--parity`` devices;
    0 when they run elsewhere (``--cluster``) or it only asks for help (then no fork
    server is warmed). A guess is harmless: a server left unused ends with the program."""
    devices, parity = 0, 0
    for k, arg in enumerate(args):
        if arg in ("-h", "--help", "--cluster") or arg.startswith("--cluster="):
            return 0
        if arg in ("-d", "--device") or arg.startswith("--device="):
            devices += 1
        elif arg.startswith("-d") and not arg.startswith("--"):
            devices += 1  # -dPATH
        elif arg == "--parity" and k + 1 < len(args) and args[k + 1].isdigit():
            parity = int(args[k + 1])
        elif arg.startswith("--parity=") and arg[9:].isdigit():
            parity = int(arg[9:])
    if os.environ.get("PARBACKUP_CLUSTER"):
        return 0
    return max(0, devices - parity)


def backup_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``backup`` when ``argv`` (the program's, without its name)
    runs that command, the program's own options (``-v``, ``-q``, ``--log-file PATH``)
    maybe before it; None for any other command, or a request for help or the version."""
    k = 0
    while k < len(argv):
        arg = argv[k]
        if arg in ("-h", "--help", "--version"):
            return None
        if arg.startswith("-"):
            k += 2 if arg in GROUP_VALUED else 1
            continue
        return argv[k + 1 :] if arg == "backup" else None
    return None


def warm(argv: list[str]) -> None:
    """Start the movers' fork server now when ``argv`` is a backup whose movers run
    here; never for shell completion (click's ``_PARBACKUP_COMPLETE``), which runs
    nothing."""
    args = backup_args(argv)
    if args is None or not movers_named(args) or os.environ.get("_PARBACKUP_COMPLETE"):
        return
    from parbackup.engine.movers import mover_executor

    mover_executor().warm()


def main() -> None:
    """Console-script entry point: the fork server warmed, then the program
    (cli/main.py)."""
    warm(sys.argv[1:])
    from parbackup.cli.main import main as program

    program()
