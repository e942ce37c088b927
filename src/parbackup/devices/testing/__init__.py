"""Test-only device wrappers: faults that cannot be made real (``faulty+KIND://``)."""
