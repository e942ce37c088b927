"""Which paths a list of patterns selects: restore ``--include``/``--exclude`` and backup
``--exclude``. One rule, in one place.

A pattern selects an absolute path when it matches the path *or any parent directory of
it* (naming a directory selects everything below it), in either of two dialects:

- a shell glob (``fnmatch``), where ``*`` also crosses ``/`` — the behaviour of
  ``--include`` before patterns were gitignore-style, kept so old commands keep working;
- a gitignore pattern (the ``pathspec`` library), so ``**`` works as in git:
  ``/srv/**/x.txt`` matches ``/srv/x.txt`` and ``/srv/a/b/x.txt``, a pattern with no
  ``/`` (``*.log``) matches a name at any depth, one with a ``/`` is anchored at ``/``;
  one ending in ``/`` (``build/``) matches directories only (and all below them).

A pattern starting with ``!`` excludes (as in gitignore; ``\\!`` is a literal ``!``). A
path is selected when no include pattern is given or one matches, and no exclude pattern
matches: an exclude always wins.

A backup applies the same rule while it scans a local tree (``ScanRules``, carried in
the ``SourceSpec``): an excluded directory is not entered, so what lies below it is never
looked at. ``Excluded`` counts what was left out, per rule, for ``plan`` and the report.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        spec = None
        if lines:  # pathspec at its first use: every process imports this module, and
            import pathspec  # a run without patterns (most) spares 12-16 ms of CPU in each

            with warnings.catch_warnings():  # re's "possible nested set" for '[[]' is noise
                warnings.simplefilter("ignore", FutureWarning)
                spec = pathspec.GitIgnoreSpec.from_lines(lines)
        return cls(globs, spec)

    def __bool__(self) -> bool:
        return bool(self.globs)

    def match(self, path: str, is_dir: bool = False) -> bool:
        """True when a pattern matches ``path`` or one of its parent directories
        (``is_dir``: the path is a directory, which a pattern ending in ``/`` matches)."""
        probe = path
        while True:
            if any(fnmatch.fnmatchcase(probe, g) for g in self.globs):
                return True
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        rel = path.lstrip("/")
        if rel and is_dir:
            rel += "/"
        # gitignore semantics already cover the parents: a matched directory takes all below.
        return bool(rel) and self.spec is not None and self.spec.match_file(rel)


@dataclass(frozen=True)
class Selection:
    """A compiled pattern list; ``selection(path)`` says whether the path is selected."""

    includes: _Patterns
    excludes: _Patterns

    def __call__(self, path: str, is_dir: bool = False) -> bool:
        if self.includes and not self.includes.match(path, is_dir):
            return False
        return not (self.excludes and self.excludes.match(path, is_dir))


@functools.lru_cache(maxsize=32)
def compile_patterns(patterns: tuple[str, ...]) -> Selection:
    """The selection a pattern list describes (``!X`` entries exclude X)."""
    inc = [p for p in patterns if not p.startswith(EXCLUDE)]
    exc = [p[len(EXCLUDE) :] for p in patterns if p.startswith(EXCLUDE)]
    return Selection(_Patterns.compile(inc), _Patterns.compile(exc))


def matches(path: str, patterns: Sequence[str], is_dir: bool = False) -> bool:
    """True when ``path`` (a directory when ``is_dir``) is selected by ``patterns``
    (every path when there are none)."""
    if not patterns:
        return True
    return compile_patterns(tuple(patterns))(path, is_dir)


@dataclass(frozen=True, slots=True)
class ScanRules:
    """What a tree scan leaves out, as picklable words (they travel in a ``SourceSpec``).

    ``patterns``: exclude patterns (the rule above). ``if_present``: names whose presence
    leaves their directory out. ``caches``: leave out directories holding a valid
    CACHEDIR.TAG. ``one_file_system``: do not enter another filesystem. ``automatic``:
    (absolute path, why) pairs left out without being asked (backup devices, the catalog).
    """

    patterns: tuple[str, ...] = ()
    if_present: tuple[str, ...] = ()
    caches: bool = False
    one_file_system: bool = False
    automatic: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.patterns
            or self.if_present
            or self.caches
            or self.one_file_system
            or self.automatic
        )


def _fast_regexes(compiled: _Patterns) -> tuple[re.Pattern | None, re.Pattern | None]:
    """The question "does any pattern match?" as two regexes, one search each: the
    globs' on the path, the gitignore patterns' on the path relative to '/'. (None, None)
    when the patterns cannot be joined (then each is asked in turn)."""
    parts = [getattr(p, "regex", None) for p in compiled.spec.patterns] if compiled.spec else []
    if not compiled.globs or not parts or any(r is None for r in parts):
        return None, None
    joined = re.sub(r"\(\?P<\w+>", "(?:", "|".join(f"(?:{r.pattern})" for r in parts))
    try:
        with warnings.catch_warnings():  # re's "possible nested set" for '[[]' is noise
            warnings.simplefilter("ignore", FutureWarning)
            globs = re.compile("|".join(fnmatch.translate(g) for g in compiled.globs))
            return globs, re.compile(joined)
    except re.error:
        return None, None


class ExcludePatterns:
    """Backup exclude patterns, compiled, that also say which pattern matched.

    A scan asks about each entry once, before entering a directory, so only the path
    itself is tested (its parents were tested already); a directory is tested with a
    trailing ``/`` so that a gitignore pattern ending in ``/`` matches directories only.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self.all = _Patterns.compile(self.patterns)
        self._one: dict[str, _Patterns] = {}
        self._globs, self._git = _fast_regexes(self.all)

    def _any(self, path: str, is_dir: bool) -> bool:
        """True when one of the patterns matches ``path``."""
        if self._globs is None or self._git is None:
            return self._hit(self.all, path, is_dir)
        if self._globs.match(path):
            return True
        rel = path.lstrip("/") + ("/" if is_dir else "")
        return rel not in ("", "/") and self._git.match(rel) is not None

    def _hit(self, compiled: _Patterns, path: str, is_dir: bool) -> bool:
        if any(fnmatch.fnmatchcase(path, g) for g in compiled.globs):
            return True
        rel = path.lstrip("/") + ("/" if is_dir else "")
        return rel not in ("", "/") and compiled.spec is not None and compiled.spec.match_file(rel)

    def rule_for(self, path: str, is_dir: bool) -> str:
        """The first pattern that excludes ``path`` ("" when none does)."""
        if not self._any(path, is_dir):
            return ""
        for pattern in self.patterns:
            one = self._one.get(pattern) or self._one.setdefault(
                pattern, _Patterns.compile([pattern])
            )
            if self._hit(one, path, is_dir):
                return pattern
        return self.patterns[0]  # unreachable in practice: the union matched


@dataclass
class Excluded:
    """What a scan left out: a count per rule and the first ``limit`` paths."""

    counts: dict[str, int] = field(default_factory=dict)
    paths: list[tuple[str, str]] = field(default_factory=list)
    limit: int = 1000

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, path: str, rule: str) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if len(self.paths) < self.limit:
            self.paths.append((path, rule))

    def merge(self, other: Excluded) -> None:
        for rule, n in other.counts.items():
            self.counts[rule] = self.counts.get(rule, 0) + n
        room = max(0, self.limit - len(self.paths))
        self.paths.extend(other.paths[:room])


NO_SELECTION = ScanRules()
"""Nothing left out: the default of a spec and of a backup."""
