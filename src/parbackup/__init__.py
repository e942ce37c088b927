"""parbackup: spread one backup over several devices at once, and restore it.

The library API is what this module exports; everything else is private and may change.
"""

__version__ = "0.1.0"
