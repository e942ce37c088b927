"""Rows over columns: how a set's volumes line up for parity.

For one set, each data device is a *column*: its *stream* is the concatenation of its
volumes of that set in sequence order. Row j is bytes [j*unit, (j+1)*unit) of every
column's stream, zero-padded past a column's end, so columns of unequal length (time
balance, redirected work, a device that failed part-way) line up without any rule of
their own: a short column is a column of zeros at its end. Parity unit i of row j is
the Reed–Solomon code of the row's k data units (redundancy/codec.py).

Pure: no I/O. The parity volume format is redundancy/volume.py.
"""

from __future__ import annotations

from dataclasses import dataclass

UNIT = 1 << 20
"""Bytes of one column in one row (1 MiB): a row is small enough to hold in memory,
large enough that the codec runs at memory speed."""


@dataclass(frozen=True, slots=True)
class Column:
    """One data device's share of a set: its label and volumes (name, size) in order."""

    label: str
    volumes: tuple[tuple[str, int], ...]

    @property
    def length(self) -> int:
        """Bytes in the column's stream."""
        return sum(size for _name, size in self.volumes)

    def start_of(self, name: str) -> int:
        """Where volume ``name`` starts in the stream; KeyError if it is not in it."""
        at = 0
        for vol, size in self.volumes:
            if vol == name:
                return at
            at += size
        raise KeyError(name)

    def spans(self, start: int, length: int) -> list[tuple[str, int, int]]:
        """The (volume, offset, bytes) pieces of stream bytes [start, start+length),
        clipped to the column's length (what lies past it is padding)."""
        out: list[tuple[str, int, int]] = []
        end = start + length
        at = 0
        for vol, size in self.volumes:
            lo, hi = max(start, at), min(end, at + size)
            if lo < hi:
                out.append((vol, lo - at, hi - lo))
            at += size
            if at >= end:
                break
        return out

    def to_json(self) -> dict:
        return {"label": self.label, "volumes": [[n, s] for n, s in self.volumes]}

    @staticmethod
    def from_json(body: dict) -> Column:
        return Column(str(body["label"]), tuple((str(n), int(s)) for n, s in body["volumes"]))


def row_count(columns: list[Column] | tuple[Column, ...], unit: int = UNIT) -> int:
    """Rows needed to cover the longest column."""
    longest = max((c.length for c in columns), default=0)
    return -(-longest // unit)


def rows_of(start: int, length: int, unit: int = UNIT) -> range:
    """The rows that stream bytes [start, start+length) fall into."""
    if length <= 0:
        return range(0)
    return range(start // unit, (start + length - 1) // unit + 1)
