"""``python -m parbackup`` runs the command-line program."""

from parbackup.cli.main import main

main()
