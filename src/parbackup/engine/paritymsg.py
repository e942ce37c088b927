"""The messages between the controller and the parity collector (engine/paritystream.py,
whose docstring gives the conversation); the collector's module names them too."""

from __future__ import annotations

from dataclasses import dataclass

from parbackup.redundancy.layout import Column


@dataclass(frozen=True, slots=True)
class Opened:
    labels: tuple[str, ...]
    schemes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    set_id: bytes
    columns: tuple[str, ...]
    created_ns: int


@dataclass(frozen=True, slots=True)
class Listening:
    address: str
    token: str


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Abandon:
    pass


@dataclass(frozen=True, slots=True)
class Written:
    volumes: tuple[tuple[str, str, int], ...]
    """(label, object name, size) of every parity volume."""
    columns: tuple[Column, ...]
    rows: int


@dataclass(frozen=True, slots=True)
class Put:
    files: tuple[tuple[str, str], ...]
    """(object name, local path) of each file to put on every parity device."""


@dataclass(frozen=True, slots=True)
class Stored:
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
