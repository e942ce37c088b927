"""``python -m parbackup`` runs the command-line program (cli/early.py first: it starts
a backup's fork server before the program's imports)."""

from parbackup.cli.early import main

main()
