"""Parity built up one data unit at a time: ISA-L's ``ec_encode_data_update``.

Reed–Solomon is linear: parity unit i of a row is the sum (in GF(2^8)) over the data
units j of ``coefficient(i, j) * unit j``. ISA-L's update call adds one data unit's
share to the m parity units of its row, so a row's parity can be accumulated while its
data units arrive from different devices, in any order, each unit read once and then let
go (engine/paritystream.py).

The library is the ISA-L that pyeclib's wheel ships (``pyeclib.libs/libisal*``); the
matrix is the one pyeclib's ``isa_l_rs_cauchy`` backend uses (``gf_gen_cauchy1_matrix``
over k+m rows, its last m rows the coding rows), so the parity is byte for byte what
redundancy/codec.py's ``RowCodec`` makes: tests/redundancy/test_isal.py compares them.
ctypes calls release the interpreter lock, so the update may run beside other threads.
Where the library cannot be found, ``Updater.load`` returns None and parity is written
after the data instead (engine/parity.py).
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import cache

try:
    import pyeclib
except ImportError:  # the optional "parity" extra is not installed
    pyeclib = None


@cache
def _library() -> ctypes.CDLL | None:
    """ISA-L as shipped in pyeclib's wheel, or None where it is not there."""
    if pyeclib is None:
        return None
    base = os.path.dirname(os.path.dirname(os.path.abspath(pyeclib.__file__)))
    for path in sorted(glob.glob(os.path.join(base, "pyeclib.libs", "libisal*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            for name in ("gf_gen_cauchy1_matrix", "ec_init_tables", "ec_encode_data_update"):
                getattr(lib, name)
        except (OSError, AttributeError):
            continue
        return lib
    return None


def address(buffer: bytearray | memoryview) -> int:
    """The address of a writable buffer's first byte (it must outlive the call)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class Updater:
    """Adds data units' shares to the parity units of their row (k data, m parity)."""

    def __init__(self, lib: ctypes.CDLL, k: int, m: int, unit: int) -> None:
        self.lib, self.k, self.m, self.unit = lib, k, m, unit
        matrix = (ctypes.c_ubyte * ((k + m) * k))()
        lib.gf_gen_cauchy1_matrix(matrix, k + m, k)
        self.tables = (ctypes.c_ubyte * (32 * k * m))()
        lib.ec_init_tables(k, m, ctypes.byref(matrix, k * k), self.tables)
        self._pointers = ctypes.c_void_p * m

    @classmethod
    def load(cls, k: int, m: int, unit: int) -> Updater | None:
        """An updater, or None where ISA-L is not available."""
        lib = _library()
        return cls(lib, k, m, unit) if lib is not None else None

    def add(self, column: int, data: int, parity: list[int]) -> None:
        """Add data unit ``column`` (at address ``data``, ``unit`` bytes) to the m parity
        units at the addresses ``parity`` (each ``unit`` bytes, zero before the first)."""
        if not 0 <= column < self.k or len(parity) != self.m:
            raise ValueError("a data unit of a column outside the stripe")
        self.lib.ec_encode_data_update(
            ctypes.c_int(self.unit),
            ctypes.c_int(self.k),
            ctypes.c_int(self.m),
            ctypes.c_int(column),
            self.tables,
            ctypes.c_void_p(data),
            self._pointers(*parity),
        )
