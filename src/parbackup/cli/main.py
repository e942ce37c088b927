"""The ``parbackup`` program: a click group dispatching to one module per command."""

from __future__ import annotations

import click

from parbackup import __version__
from parbackup.cli.backup import backup
from parbackup.cli.files import files
from parbackup.cli.plan import plan
from parbackup.cli.prune import prune
from parbackup.cli.rebuild_catalog import rebuild
from parbackup.cli.relabel import relabel
from parbackup.cli.restore import restore
from parbackup.cli.sets import sets
from parbackup.cli.verify import verify

COMMANDS = (backup, plan, restore, verify, sets, files, prune, rebuild, relabel)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    """


for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="parbackup")
