"""File sources: where the files to back up come from."""
