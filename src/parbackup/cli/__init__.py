"""The command-line program. Only this package prints."""
