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
            for name in (
                "gf_gen_cauchy1_matrix",
                "ec_init_tables",
                "ec_encode_data_update",
                "ec_encode_data",
            ):
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
        # each column's own coefficients (m x 1): ``put`` writes its share alone
        self.column_tables = []
        for j in range(k):
            coefficients = (ctypes.c_ubyte * m)(*(matrix[(k + i) * k + j] for i in range(m)))
            tables = (ctypes.c_ubyte * (32 * m))()
            lib.ec_init_tables(1, m, coefficients, tables)
            self.column_tables.append(tables)

    @classmethod
    def load(cls, k: int, m: int, unit: int) -> Updater | None:
        """An updater, or None where ISA-L is not available."""
        lib = _library()
        return cls(lib, k, m, unit) if lib is not None else None

    def put(self, column: int, data: int, parity: list[int]) -> None:
        """Write data unit ``column``'s share into the m parity units at ``parity``
        (whatever they held): the first unit of a row, so its buffer needs no zeroing
        first and is written, not read and written (``ec_encode_data`` of one column)."""
        if not 0 <= column < self.k or len(parity) != self.m:
            raise ValueError("a data unit of a column outside the stripe")
        self.lib.ec_encode_data(
            ctypes.c_int(self.unit),
            ctypes.c_int(1),
            ctypes.c_int(self.m),
            self.column_tables[column],
            (ctypes.c_void_p * 1)(data),
            self._pointers(*parity),
        )

    def encode(self, data: list[int], parity: list[int]) -> None:
        """Write the m parity units at ``parity`` from all k data units of a row at
        ``data`` (``ec_encode_data``): each data unit read once and each parity unit
        written once, where ``put`` and ``add`` read and write the parity units once per
        column (2.6x the time for k=3, m=1 on 1 MiB units: docs/BENCHMARKS.md)."""
        if len(data) != self.k or len(parity) != self.m:
            raise ValueError("a row of the wrong shape")
        self.lib.ec_encode_data(
            ctypes.c_int(self.unit),
            ctypes.c_int(self.k),
            ctypes.c_int(self.m),
            self.tables,
            (ctypes.c_void_p * self.k)(*data),
            self._pointers(*parity),
        )

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


class Decoder:
    """Gives back lost data units of a row from any k of its units, straight into the
    caller's buffers (ISA-L's ``gf_invert_matrix`` and ``ec_encode_data`` over the same
    Cauchy matrix as ``Updater``): no fragment is built, copied or allocated per row, so
    a reader decoding a lost column holds only its own buffers (devices/decoded.py)."""

    def __init__(self, lib: ctypes.CDLL, k: int, m: int, unit: int) -> None:
        self.lib, self.k, self.m, self.unit = lib, k, m, unit
        self.matrix = (ctypes.c_ubyte * ((k + m) * k))()
        lib.gf_gen_cauchy1_matrix(self.matrix, k + m, k)
        self._plans: dict[tuple[tuple[int, ...], tuple[int, ...]], ctypes.Array] = {}

    @classmethod
    def load(cls, k: int, m: int, unit: int) -> Decoder | None:
        """A decoder, or None where ISA-L is not available."""
        lib = _library()
        return cls(lib, k, m, unit) if lib is not None else None

    def _tables(self, chosen: tuple[int, ...], wanted: tuple[int, ...]) -> ctypes.Array:
        """The coding tables that turn the units ``chosen`` into the data units
        ``wanted`` (kept per loss pattern: a restore meets few)."""
        plan = self._plans.get((chosen, wanted))
        if plan is not None:
            return plan
        k, matrix = self.k, self.matrix
        rows = (ctypes.c_ubyte * (k * k))()
        for r, idx in enumerate(chosen):
            for c in range(k):
                rows[r * k + c] = matrix[idx * k + c]
        inverse = (ctypes.c_ubyte * (k * k))()
        if self.lib.gf_invert_matrix(rows, inverse, ctypes.c_int(k)) != 0:
            raise ValueError("the units chosen do not determine the row")
        wanted_rows = (ctypes.c_ubyte * (len(wanted) * k))()
        for r, j in enumerate(wanted):
            for c in range(k):
                wanted_rows[r * k + c] = inverse[j * k + c]
        plan = (ctypes.c_ubyte * (32 * k * len(wanted)))()
        self.lib.ec_init_tables(k, len(wanted), wanted_rows, plan)
        self._plans[(chosen, wanted)] = plan
        return plan

    def recover(self, present: dict[int, int], wanted: dict[int, int]) -> None:
        """Write the data units ``wanted`` (index -> address of ``unit`` bytes) from the
        units ``present`` (index -> address; data 0..k-1, parity k..k+m-1; any k).
        ValueError with fewer than k present or a wanted index that is not data."""
        if len(present) < self.k:
            raise ValueError(f"a row needs {self.k} units; only {len(present)} left")
        if not wanted or any(not 0 <= j < self.k for j in wanted):
            raise ValueError("only data units are recovered")
        chosen = tuple(sorted(present)[: self.k])
        order = tuple(sorted(wanted))
        tables = self._tables(chosen, order)
        sources = (ctypes.c_void_p * self.k)(*(present[i] for i in chosen))
        targets = (ctypes.c_void_p * len(order))(*(wanted[j] for j in order))
        self.lib.ec_encode_data(
            ctypes.c_int(self.unit),
            ctypes.c_int(self.k),
            ctypes.c_int(len(order)),
            tables,
            sources,
            targets,
        )
