"""ls, diff and find end to end: real backups onto directory devices, then the commands
as real processes, human and --json output, set references in every form."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli
from parbackup.catalog import Catalog

pytestmark = pytest.mark.slow  # several real backups


def backup(src: Path, devs: list[Path], cat: Path, *extra: str) -> str:
    r = run_cli(
        "backup",
        str(src),
        *[a for d in devs for a in ("-d", str(d))],
        "--catalog",
        str(cat),
        "--json",
        *extra,
    )
    assert r.code == 0, r.err
    return r.json["set"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory):
    """Two sets of one tree: added, removed, changed, metadata-only and untouched paths,
    and names rich would read as markup or that are not one printable line. Made once
    for the module: ls, diff and find only read them."""
    tmp_path = tmp_path_factory.mktemp("two_sets")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "app.conf").write_bytes(b"port=1\n")
    (src / "etc" / "same.conf").write_bytes(b"same\n")
    (src / "touched.txt").write_bytes(b"touched\n")
    (src / "gone.txt").write_bytes(b"gone\n")
    (src / "[bold]x").write_bytes(b"markup\n")
    os.symlink("etc/app.conf", src / "link")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    cat = tmp_path / "cat.sqlite"
    first = backup(src, devs, cat, "--time", "2026-03-01T02:00:00+00:00")
    (src / "etc" / "app.conf").write_bytes(b"port=2\n")  # same size, other bytes
    os.utime(src / "etc" / "app.conf", ns=(1, 1))
    (src / "touched.txt").write_bytes(b"touched\n")  # same bytes, new mtime
    os.utime(src / "touched.txt", ns=(2_000_000_000, 2_000_000_000))
    (src / "gone.txt").unlink()
    (src / b"new\nline".decode()).write_bytes(b"new\n")
    second = backup(src, devs, cat, "--time", "2026-03-02T02:00:00+00:00")
    return src, cat, first, second


def test_ls_lists_a_set_at_or_below_a_path_by_any_reference(two_sets) -> None:
    src, cat, first, second = two_sets
    r = run_cli("ls", "latest~1", "--catalog", str(cat), "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert doc["status"] == "ok" and doc["set"] == first
    paths = {e["path"] for e in doc["entries"]}
    assert f"{src}/gone.txt" in paths and f"{src}/new\nline" not in paths
    link = next(e for e in doc["entries"] if e["path"] == f"{src}/link")
    assert link["kind"] == "symlink" and link["link"] == "etc/app.conf"

    for ref in ("latest", second[:6], "2026-03-02", "2026-03-02T03:00:00+01:00"):
        r = run_cli("ls", ref, f"{src}/etc", "--catalog", str(cat), "--json")
        assert r.code == 0, (ref, r.err)
        assert r.json["set"] == second
        assert [e["path"] for e in r.json["entries"]] == [
            f"{src}/etc",
            f"{src}/etc/app.conf",
            f"{src}/etc/same.conf",
        ]

    r = run_cli("ls", "2026-03-01T12:00:00+00:00", "--catalog", str(cat))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert any(ln.endswith(f" {src}/[bold]x") for ln in lines)  # printed as named
    assert any(ln.endswith(f" {src}/link -> etc/app.conf") for ln in lines)
    assert not any("new" in ln for ln in lines)


def test_ls_names_a_bad_reference_in_one_line(two_sets) -> None:
    _src, cat, _first, _second = two_sets
    r = run_cli("ls", "latest~5", "--catalog", str(cat))
    assert r.code == 1 and r.err.count("\n") == 1 and "only 2 restorable" in r.err
    r = run_cli("ls", "2025-01-01", "--catalog", str(cat), "--json")
    assert r.code == 1 and r.json["status"] == "failed"
    assert "at or before 2025-01-01" in r.json["error"]
    r = run_cli("ls", "last-tuesday", "--catalog", str(cat))
    assert r.code == 1 and "no backup set 'last-tuesday'" in r.err and "latest~N" in r.err


def test_diff_tells_added_removed_changed_and_metadata_only(two_sets) -> None:
    src, cat, first, second = two_sets
    r = run_cli("diff", "latest~1", "latest", "--catalog", str(cat), "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert (doc["status"], doc["set_a"], doc["set_b"]) == ("ok", first, second)
    assert [e["path"] for e in doc["added"]] == [f"{src}/new\nline"]
    assert [e["path"] for e in doc["removed"]] == [f"{src}/gone.txt"]
    changed = {c["path"]: c["what"] for c in doc["changed"]}
    assert changed == {f"{src}/etc/app.conf": ["data", "mtime"]}  # same size, other bytes
    meta = {c["path"]: c["what"] for c in doc["metadata"]}
    assert meta[f"{src}/touched.txt"] == ["mtime"]  # rewritten with the same bytes
    assert f"{src}/etc/same.conf" not in meta and f"{src}/link" not in meta

    r = run_cli("diff", first, second[:8], "--catalog", str(cat))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert f"+ {src}/new\\nline" in lines  # one line, escaped
    assert f"- {src}/gone.txt" in lines
    assert f"M {src}/etc/app.conf (data, mtime)" in lines
    assert f"U {src}/touched.txt (mtime)" in lines
    assert lines[-1].startswith("added 1, removed 1, changed 1, metadata only ")


def test_find_searches_every_set_with_the_selection_rules(two_sets) -> None:
    src, cat, first, second = two_sets
    r = run_cli("find", "*.conf", "--catalog", str(cat), "--json")
    assert r.code == 0, r.err
    found = [(f["set"], f["path"]) for f in r.json["found"]]
    assert found == [
        (first, f"{src}/etc/app.conf"),
        (first, f"{src}/etc/same.conf"),
        (second, f"{src}/etc/app.conf"),
        (second, f"{src}/etc/same.conf"),
    ]
    r = run_cli("find", f"{src}/**/app.conf", "!**/same.conf", "gone.txt", "--catalog", str(cat))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{first} 2026-03-01T02:00:00+00:00 ")
    assert lines[0].endswith(f"{src}/etc/app.conf") and lines[1].endswith(f"{src}/gone.txt")
    assert lines[2].startswith(second) and lines[2].endswith(f"{src}/etc/app.conf")
    r = run_cli("find", "*]x", "--catalog", str(cat))
    assert r.code == 0 and r.out.splitlines()[0].endswith(f"{src}/[bold]x")


def test_an_ambiguous_prefix_lists_the_sets_it_fits(tmp_path: Path) -> None:
    """Sets whose ids share a prefix (made through the catalog's own API, since a
    backup's ids are random): the prefix is a usage error naming each candidate."""
    cat = tmp_path / "cat.sqlite"
    with Catalog(str(cat)) as c:
        for set_id, when in (("ab" + "1" * 30, "2026-03-01"), ("ab" + "2" * 30, "2026-03-02")):
            c.begin_set(
                set_id,
                strategy="fill",
                order="desc",
                threshold=1,
                sources=["/s"],
                created=f"{when}T02:00:00+00:00",
            )
            c.finish_set(set_id, status="complete", files=0, nbytes=0, report={}, devices=[])
    r = run_cli("ls", "ab", "--catalog", str(cat))
    assert r.code == 2 and r.err.count("\n") == 1
    assert "set id 'ab' is ambiguous" in r.err
    assert f"ab{'1' * 30} (2026-03-01T02:00:00+00:00, complete)" in r.err
    assert f"ab{'2' * 30} (2026-03-02T02:00:00+00:00, complete)" in r.err
    r = run_cli("diff", "ab1", "ab", "--catalog", str(cat), "--json")
    assert r.code == 2 and r.json["status"] == "failed" and "ambiguous" in r.json["error"]
    r = run_cli("ls", "ab2", "--catalog", str(cat), "--json")
    assert r.code == 0 and r.json["set"] == "ab" + "2" * 30 and r.json["entries"] == []


def test_an_empty_set_name_is_a_usage_error_in_every_command(two_sets, tmp_path: Path) -> None:
    """``--set ''`` (say, an unset shell variable) names no set: not the latest one."""
    _src, cat, _first, _second = two_sets
    target = tmp_path / "r"
    for args in (
        ("restore", "--set", "", "--target", str(target)),
        ("verify", "--set", ""),
        ("files", "--set", ""),
        ("ls", ""),
        ("diff", "", "latest"),
        ("diff", "latest", " "),
        ("report", "", "--html", str(tmp_path / "r.html")),
        ("repair", "--set", "", "--device", str(tmp_path / "new")),
    ):
        r = run_cli(*args, "--catalog", str(cat))
        assert r.code == 2 and r.err.count("\n") == 1 and "empty set name" in r.err, args
    assert not target.exists() and not (tmp_path / "new").exists()
    assert not (tmp_path / "r.html").exists()
