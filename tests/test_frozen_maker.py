"""parbackup/frozen.py: the fast constructor makes the same frozen objects as the class."""

from __future__ import annotations

import dataclasses

import pytest

from parbackup.format import RecordHeader
from parbackup.frozen import maker
from parbackup.model import RecordRef


def test_made_objects_equal_the_class_ones_and_stay_frozen():
    args = ("L", "vol-1", 64, 120, 4096, 100, b"c" * 32, "ab" * 16, 7, 90)
    made = maker(RecordRef)(*args)
    assert type(made) is RecordRef
    assert made == RecordRef(*args) and hash(made) == hash(RecordRef(*args))
    assert made.length == 90
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.size = 1  # type: ignore[misc]
    header = ("file", b"s" * 16, 1, 0, 10, 10, 0o644, 0, 0, 5, b"d" * 32, b"a", b"", 0, -1)
    assert maker(RecordHeader)(*header) == RecordHeader(*header)


def test_classes_it_would_build_wrong_are_refused():
    @dataclasses.dataclass(frozen=True)
    class Plain:  # no slots: its fields live in __dict__
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    for cls in (Plain, Checked):
        with pytest.raises(TypeError):
            maker(cls)
