"""Which paths a list of patterns selects: restore ``--include``/``--exclude`` (and, later,
backup excludes). One rule, in one place.

A pattern selects an absolute path when it matches the path *or any parent directory of
it* (naming a directory selects everything below it), in either of two dialects:

- a shell glob (``fnmatch``), where ``*`` also crosses ``/`` — the behaviour of
  ``--include`` before patterns were gitignore-style, kept so old commands keep working;
- a gitignore pattern (the ``pathspec`` library), so ``**`` works as in git:
  ``/srv/**/x.txt`` matches ``/srv/x.txt`` and ``/srv/a/b/x.txt``, a pattern with no
  ``/`` (``*.log``) matches a name at any depth, one with a ``/`` is anchored at ``/``.

A pattern starting with ``!`` excludes (as in gitignore; ``\\!`` is a literal ``!``). A
path is selected when no include pattern is given or one matches, and no exclude pattern
matches: an exclude always wins.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pathspec

EXCLUDE = "!"


def exclude(pattern: str) -> str:
    """The pattern-list form of an exclude pattern (``--exclude X`` is ``!X``)."""
    return EXCLUDE + pattern


@dataclass(frozen=True)
class _Patterns:
    """One side (includes or excludes) compiled: shell globs plus one gitignore spec."""

    globs: tuple[str, ...]
    spec: pathspec.PathSpec | None

    @classmethod
    def compile(cls, patterns: Sequence[str]) -> _Patterns:
        globs = tuple(p[1:] if p.startswith("\\!") else p for p in patterns)
        lines = ["\\" + p if p.startswith("!") else p for p in patterns]  # never a negation
        with warnings.catch_warnings():  # re's "possible nested set" for '[[]' is noise
            warnings.simplefilter("ignore", FutureWarning)
            spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        return cls(globs, spec)

    def __bool__(self) -> bool:
        return bool(self.globs)

    def match(self, path: str) -> bool:
        """True when a pattern matches ``path`` or one of its parent directories."""
        probe = path
        while True:
            if any(fnmatch.fnmatchcase(probe, g) for g in self.globs):
                return True
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        rel = path.lstrip("/")
        # gitignore semantics already cover the parents: a matched directory takes all below.
        return bool(rel) and self.spec is not None and self.spec.match_file(rel)


@dataclass(frozen=True)
class Selection:
    """A compiled pattern list; ``selection(path)`` says whether the path is selected."""

    includes: _Patterns
    excludes: _Patterns

    def __call__(self, path: str) -> bool:
        if self.includes and not self.includes.match(path):
            return False
        return not (self.excludes and self.excludes.match(path))


@functools.lru_cache(maxsize=32)
def compile_patterns(patterns: tuple[str, ...]) -> Selection:
    """The selection a pattern list describes (``!X`` entries exclude X)."""
    inc = [p for p in patterns if not p.startswith(EXCLUDE)]
    exc = [p[len(EXCLUDE) :] for p in patterns if p.startswith(EXCLUDE)]
    return Selection(_Patterns.compile(inc), _Patterns.compile(exc))


def matches(path: str, patterns: Sequence[str]) -> bool:
    """True when ``path`` is selected by ``patterns`` (every path when there are none)."""
    if not patterns:
        return True
    return compile_patterns(tuple(patterns))(path)
