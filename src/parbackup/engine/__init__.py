"""Running backups, restores and verifies: threads, devices, catalog, progress."""
