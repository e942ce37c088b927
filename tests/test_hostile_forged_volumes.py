"""Forged volumes read without their catalog: rebuild-catalog, then restore and verify.

Each volume is well formed (every checksum matches) but says something no backup
writes: records that overlap, a record at 2^62, one file id under two paths, two file
ids under one path, a file below a file or below a symlink, a NUL in a path. Every one
is a named damage or skip with a non-zero exit, never a write outside the target, never
an internal error, never an ``ok``-looking restore that lost a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from parbackup.format import RecordHeader, VolumeHeader, checksum, end_record

LABEL = "cd" * 16


def _rec(kind: str, sid: bytes, fid: int, offset: int, payload: bytes, size: int, path: bytes,
         link: bytes = b"") -> bytes:  # fmt: skip
    mode = {"dir": 0o40755, "symlink": 0o120777}.get(kind, 0o100644)
    head = RecordHeader(
        kind, sid, fid, offset, len(payload), size, mode, 0, 0, 0, checksum(payload), path, link
    )
    return head.encode() + payload


def _forge(dev: Path, records) -> None:
    """A one-volume set on ``dev`` holding ``records(set_id)`` after the /src directory."""
    (dev / "label.json").write_text(json.dumps({"label": LABEL, "created": "x", "kind": "file"}))
    sid = os.urandom(16)
    head = VolumeHeader(sid, bytes.fromhex(LABEL), 1, 1, {"sources": ["/src"], "devices": 1})
    recs = [_rec("dir", sid, 0, 0, b"", 0, b"/src"), *records(sid)]
    vol = head.encode() + b"".join(recs) + end_record(sid, len(recs)).encode()
    (dev / "sets" / sid.hex()).mkdir(parents=True)
    (dev / "sets" / sid.hex() / "forged-0001.pbv").write_bytes(vol)


def _run(tmp_path: Path, records) -> dict[str, object]:
    """Exit codes and output of rebuild-catalog, restore and verify of a forged set."""
    dev = tmp_path / "dev"
    dev.mkdir()
    _forge(dev, records)
    cat = str(tmp_path / "cat.sqlite")
    out: dict[str, object] = {}
    for name, args in (
        ("rebuild", ["rebuild-catalog", "-d", str(dev)]),
        ("restore", ["restore", "--target", str(tmp_path / "t")]),
        ("verify", ["verify"]),
    ):
        r = run_cli(*args, "--catalog", cat)
        assert "internal error" not in r.err and "Traceback" not in r.err, r.err
        out[name], out[name + "_text"] = r.code, r.out + r.err
    return out


def test_two_entries_under_one_path_are_named_never_one_silently_lost(tmp_path):
    """Two file ids with one path: restore wrote one, renamed the other over it and said
    ``ok`` of both (exit 0); verify said ``ok``. Now both name the path as damaged."""
    out = _run(
        tmp_path,
        lambda s: [
            _rec("file", s, 1, 0, b"1111", 4, b"/src/s"),
            _rec("file", s, 2, 0, b"2222", 4, b"/src/s"),
            _rec("file", s, 3, 0, b"kept", 4, b"/src/k"),
        ],
    )
    assert out["restore"] == 1, out["restore_text"]
    assert "DAMAGED: /src/s" in str(out["restore_text"]), out["restore_text"]
    assert not (tmp_path / "t" / "src" / "s").exists()  # neither could be told right
    assert (tmp_path / "t" / "src" / "k").read_bytes() == b"kept"
    assert out["verify"] == 1, out["verify_text"]
    assert "/src/s" in str(out["verify_text"]), out["verify_text"]


OUTSIDE = "/tmp/parbackup-hostile9-outside-never"

HELD = {
    "overlapping-records": lambda s: [
        _rec("file", s, 1, 0, b"A" * 10, 15, b"/src/f"),
        _rec("file", s, 1, 5, b"B" * 10, 15, b"/src/f"),
    ],
    "record-at-2^62": lambda s: [_rec("file", s, 1, (1 << 62) - 8, b"C" * 8, 1 << 62, b"/src/h")],
    "one-id-two-paths": lambda s: [
        _rec("file", s, 1, 0, b"A" * 5, 10, b"/src/a"),
        _rec("file", s, 1, 5, b"B" * 5, 10, b"/src/b"),
    ],
    "file-below-a-file": lambda s: [
        _rec("file", s, 1, 0, b"P" * 4, 4, b"/src/p"),
        _rec("file", s, 2, 0, b"Q" * 4, 4, b"/src/p/q"),
    ],
    "nul-in-a-path": lambda s: [_rec("file", s, 1, 0, b"N" * 4, 4, b"/src/a\x00/../../x")],
    "file-below-a-symlink-out": lambda s: [
        _rec("symlink", s, 1, 0, b"", 0, b"/src/l", OUTSIDE.encode()),
        _rec("file", s, 2, 0, b"E" * 4, 4, b"/src/l/evil"),
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HELD))
def test_forged_volumes_are_named_never_restored_as_whole(tmp_path, case):
    out = _run(tmp_path, HELD[case])
    assert out["restore"] != 0, out["restore_text"]
    assert not os.path.lexists(OUTSIDE)
    assert not os.path.lexists("/x")
    for dirpath, _dirs, names in os.walk(tmp_path / "t"):  # nothing half written stays
        assert not [n for n in names if n.endswith(".part")], (dirpath, names)
