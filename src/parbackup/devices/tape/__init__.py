"""The tape kind (``tape://``): a drive, FIFO or plain file written front to back.

``tape.py`` is the device; ``stream.py`` the framed block stream it reads and writes.
"""

from parbackup.devices.tape.tape import TapeDevice

__all__ = ["TapeDevice"]
