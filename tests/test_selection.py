"""selection.py: the one rule for --include/--exclude patterns (properties and examples)."""

from __future__ import annotations

import fnmatch
import glob
import os

import pathspec
from hypothesis import given
from hypothesis import strategies as st

from parbackup.selection import ExcludePatterns, exclude, matches

names = st.sampled_from(["a", "b", "c", "x.conf", "y.log", "d[1]", "e f", "!g", "h*"])
paths = st.lists(names, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
globs = st.lists(
    st.sampled_from(["a", "b", "x.conf", "*", "?", "*.conf", "*.log", "[ab]", "d[[]1]"]),
    min_size=1,
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))


def old_matches(path: str, globs: list[str]) -> bool:
    """--include before selection.py: fnmatch on the path or any parent."""
    probe = path
    while True:
        if any(fnmatch.fnmatchcase(probe, g) for g in globs):
            return True
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent


def parents(path: str) -> list[str]:
    out = []
    while path != "/":
        out.append(path)
        path = os.path.dirname(path)
    return out


@given(paths, st.lists(globs, min_size=1, max_size=3))
def test_what_old_includes_selected_is_still_selected(path, pats):
    if old_matches(path, pats):
        assert matches(path, pats)


@given(paths)
def test_no_patterns_select_everything(path):
    assert matches(path, [])
    assert matches(path, ())


@given(paths, st.lists(globs, max_size=3), globs)
def test_an_exclude_always_wins(path, includes, excluded):
    if matches(path, [excluded]):
        assert not matches(path, [*includes, exclude(excluded)])


@given(paths, st.lists(globs, max_size=3), globs)
def test_an_exclude_removes_only_what_it_matches(path, includes, excluded):
    if not matches(path, [excluded]):
        assert matches(path, [*includes, exclude(excluded)]) == matches(path, includes)


@given(paths, paths)
def test_naming_a_directory_selects_everything_below(directory, rest):
    below = directory + rest
    assert matches(below, [glob.escape(directory)])
    assert not matches(below, [exclude(glob.escape(directory))])


@given(st.lists(names, min_size=0, max_size=4), names)
def test_double_star_spans_zero_or_more_directories(middle, name):
    path = "/top/" + "/".join([*middle, name]) if middle else f"/top/{name}"
    pattern = "/top/**/" + glob.escape(name)
    assert matches(path, [pattern])
    assert not matches("/other/" + name, [pattern])


def test_examples():
    assert matches("/srv/x.conf", ["/srv/**/x.conf"])  # fnmatch alone says no
    assert not old_matches("/srv/x.conf", ["/srv/**/x.conf"])
    assert matches("/srv/a/b/x.conf", ["/srv/**/x.conf"])
    assert matches("/srv/a/b/x.conf", ["*.conf"])
    assert matches("/srv/a/b/x.conf", ["x.conf"])  # gitignore: a name at any depth
    assert matches("/srv/a/b/x.conf", ["/srv/a"])
    assert not matches("/srv/ab/x.conf", ["/srv/a"])
    assert not matches("/srv/a/x.conf", [exclude("/srv/a")])
    assert matches("/srv/b/x.conf", [exclude("/srv/a")])
    assert not matches("/srv/a/x.log", ["/srv/**", exclude("*.log")])
    assert matches("/srv/!odd", ["\\!odd"])  # a literal '!'
    assert not matches("/srv/!odd", [exclude("!odd")])  # excludes the name '!odd' ...
    assert matches("/srv/odd", [exclude("!odd")])  # ... and nothing else


# -- backup excludes (ExcludePatterns): one joined regex must agree with each pattern alone --

exclude_patterns = st.lists(
    st.sampled_from(
        [
            "*.log",
            "a",
            "b/",
            "/a/b",
            "a/**/c",
            "**/x.conf",
            "*",
            "[ab]",
            "d[[]1]",
            "h*/",
            "!g",
            "\\!g",
            "e f",
            "/c/*",
            "?",
            "**/b/",
            "#c",
        ]
    ),
    min_size=1,
    max_size=4,
)


def reference_rule(path: str, is_dir: bool, patterns: list[str]) -> str:
    """The first pattern that matches ``path`` itself, asked one pattern at a time."""
    rel = path.lstrip("/") + ("/" if is_dir else "")
    for p in patterns:
        glob_ = p[1:] if p.startswith("\\!") else p
        line = "\\" + p if p.startswith("!") else p
        spec = pathspec.GitIgnoreSpec.from_lines([line])
        if fnmatch.fnmatchcase(path, glob_) or spec.match_file(rel):
            return p
    return ""


@given(paths, st.booleans(), exclude_patterns)
def test_exclude_patterns_name_the_first_matching_pattern(path, is_dir, patterns):
    assert ExcludePatterns(patterns).rule_for(path, is_dir) == reference_rule(
        path, is_dir, patterns
    )
