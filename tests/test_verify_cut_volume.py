"""verify of a volume whose end is cut (a copy stopped short, a disk image cut).

A volume cut after its last file's bytes (its end record gone, with the payload-less
records of directories, links and empty files before it, which a restore takes from the
catalog) lost no file's bytes: restore gives every file back, exit 0. verify said
``damaged`` and exited 1, as for a set whose files were lost, and named those
directories, links and empty files damaged. It now says ``volume-damaged`` (exit 3),
names the volume (and the entries whose records it lost), and says "every file whole";
a cut that reaches a file's bytes still names that file, exit 1. Real volumes on
directory devices, cut with ``truncate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import open_catalog


def last_payload_end(cat: str, volume: Path) -> tuple[int, int]:
    """(where the last payload record in ``volume`` ends, the file id it is of)."""
    with open_catalog(cat) as catalog:
        (info,) = catalog.sets()
        ends = [
            (ref.position + ref.header_size + ref.length, fid)
            for fid, ref in catalog.records(info.id)
            if ref.size and Path(ref.volume).name == volume.name
        ]
    return max(ends)


def inside_an_envelope(cat: str, volume: Path, after: int) -> int:
    """A position half way through the sealed envelope (an encrypted set's stored name
    and metadata) of the first payload-less record after ``after`` in ``volume``."""
    with open_catalog(cat) as catalog:
        (info,) = catalog.sets()
        ref = min(
            (r for _f, r in catalog.records(info.id) if Path(r.volume).name == volume.name
             and not r.size and r.position >= after),
            key=lambda r: r.position,
        )  # fmt: skip
    assert ref.length > 1
    return ref.position + ref.header_size + ref.length // 2


PW = {"PARBACKUP_PASSWORD": "correct horse battery"}


def backed_up(tmp_path: Path, device_dirs, n: int = 1, *options: str):
    src = make_tree(tmp_path / "src", seed=12, files=30, max_size=60_000, big=(500_000,))
    devs = device_dirs(n)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", cat, *options, env=PW)
    assert r.code == 0, r.out + r.err
    return src, devs, cat


@pytest.mark.parametrize(
    "options, where",
    [((), "after the last file"), (("--encrypt",), "in an envelope")],
)
def test_a_volume_cut_after_its_last_files_bytes_is_damaged_every_file_whole(
    tmp_path: Path, device_dirs, options: tuple[str, ...], where: str
) -> None:
    """Cut right after the last file's bytes, or (an encrypted set) inside the sealed
    envelope of the first payload-less record after them."""
    src, (dev,), cat = backed_up(tmp_path, device_dirs, 1, *options)
    (volume,) = (dev / "sets").rglob("*.pbv")
    end, _fid = last_payload_end(cat, volume)
    size = volume.stat().st_size
    assert size - end > 1024  # a tail of payload-less records, then the end record
    os.truncate(
        volume, end if where == "after the last file" else inside_an_envelope(cat, volume, end)
    )
    r = run_cli("verify", "--catalog", cat, env=PW)
    assert r.code == 3, r.out + r.err
    assert "volume-damaged" in r.out and "every file whole" in r.out + r.err, r.out + r.err
    damaged = [ln for ln in (r.out + r.err).splitlines() if ln.startswith("DAMAGED:")]
    assert damaged and all(ln.startswith("DAMAGED: volume ") for ln in damaged), damaged
    r = run_cli("verify", "--catalog", cat, "--json", env=PW)
    assert r.code == 3 and r.json["status"] == "volume-damaged", r.out + r.err
    name = str(volume.relative_to(dev))
    assert {d["volume"] for d in r.json["damaged"]} == {name}
    assert all(d["path"] == "" for d in r.json["damaged"])
    assert any(d.get("entry") for d in r.json["damaged"])  # a lost directory's record
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", cat, "--target", str(out), env=PW)
    assert r.code == 0, r.out + r.err  # what verify promised: every file back
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_a_cut_into_a_files_bytes_names_that_file(tmp_path: Path, device_dirs) -> None:
    _src, (dev,), cat = backed_up(tmp_path, device_dirs)
    (volume,) = (dev / "sets").rglob("*.pbv")
    end, fid = last_payload_end(cat, volume)
    os.truncate(volume, end - 16)  # into the last payload record only
    with open_catalog(cat) as catalog:
        path = next(f.entry.path for f in catalog.files(catalog.sets()[0].id) if f.file_id == fid)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 1 and r.json["status"] == "damaged", r.out + r.err
    assert [d["path"] for d in r.json["damaged"] if d["path"]] == [path]
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 1 and f"DAMAGED: {path} " in r.out + r.err, r.out + r.err
    assert "every file whole" not in r.out + r.err


@pytest.mark.parametrize("cut", [128, 4096])
def test_a_cut_covered_by_parity_is_recoverable_every_file_whole(
    tmp_path: Path, device_dirs, cut: int
) -> None:
    _src, devs, cat = backed_up(tmp_path, device_dirs, 3, "--parity", "1")
    volume = sorted((devs[0] / "sets").rglob("*.pbv"))[0]
    os.truncate(volume, volume.stat().st_size - cut)
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 3 and "every file whole" in r.out + r.err, r.out + r.err
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "recoverable" and r.json["damaged"] == [], r.out + r.err


def with_xattrs(src: Path) -> dict[str, dict[str, bytes]]:
    """An extended attribute on every file and directory of ``src`` (each then has a
    metadata record in the volume, right after its own record); path -> attributes."""
    out: dict[str, dict[str, bytes]] = {}
    for p in [src, *src.rglob("*")]:
        if not p.is_symlink():
            os.setxattr(p, "user.tag", p.name.encode())
            out[str(p.relative_to(src))] = {"user.tag": p.name.encode()}
    return out


@pytest.mark.parametrize("options", [(), ("--encrypt",)])
def test_a_cut_that_takes_metadata_records_is_volume_damaged(
    tmp_path: Path, device_dirs, options: tuple[str, ...]
) -> None:
    """Cut right after the last file's bytes: the metadata record after them (its
    extended attributes, which the catalog keeps too) goes with the tail, so the next
    record is not where the last one ended. That read as a misplaced record of a
    directory, ``damaged`` (exit 1), while restore gave every file back with its
    attributes."""
    src = make_tree(tmp_path / "src", seed=12, files=30, max_size=60_000, big=(500_000,))
    attrs = with_xattrs(src)
    (dev,) = device_dirs(1)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(dev), "--catalog", cat, *options, env=PW)
    assert r.code == 0, r.out + r.err
    (volume,) = (dev / "sets").rglob("*.pbv")
    end, _fid = last_payload_end(cat, volume)
    os.truncate(volume, end)
    r = run_cli("verify", "--catalog", cat, "--json", env=PW)
    assert r.code == 3 and r.json["status"] == "volume-damaged", r.out + r.err
    assert all(d["path"] == "" for d in r.json["damaged"]), r.json["damaged"]
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", cat, "--target", str(out), env=PW)
    assert r.code == 0, r.out + r.err
    back = restored_root(out, src)
    assert snapshot(back) == snapshot(src)
    for rel, want in attrs.items():
        assert {k: os.getxattr(back / rel, k) for k in want} == want, rel
