"""report --html end to end: a backup onto real directory devices, one of which fails
mid-write (the faulty+file:// wrapper), keeps per-device progress samples in the
catalog; the page drawn from them is opened in headless Chromium, which must render
every device's line, the failure and the balance."""

from __future__ import annotations

import html
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

from conftest import make_tree, run_cli
from fsfixtures import ext4_fixture, fill_up, power_cut, sh, tmpfs_fixture  # noqa: F401

pytestmark = pytest.mark.slow  # a real backup and a real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # paint everything before the capture, even on a loaded machine: a screenshot taken
    # before the first paint is black (seen once under a full parallel test run)
    "--run-all-compositor-stages-before-draw",
    "--virtual-time-budget=5000",
    "--force-color-profile=srgb",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary; installed from Debian's packages when missing (as root)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        ):
            subprocess.run(
                cmd,
                capture_output=True,
                timeout=900,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and could not be installed (apt-get chromium)")
    return found


def browse(chromium: str, tmp_path: Path, page: Path, *action: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chrome-profile-{len(list(tmp_path.glob('chrome-profile-*')))}"
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
        capture_output=True,
        timeout=300,
        check=True,
    )


def png_pixels(path: Path) -> set[tuple[int, int, int]]:
    """The distinct colours of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium
    writes), decoded here so the test needs no imaging library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for row in range(len(raw) // (stride + 1)):
        ftype = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        colours.update(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return colours


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_report_page_shows_every_device_the_failure_and_the_balance(
    tmp_path: Path, chromium: str
) -> None:
    src = make_tree(tmp_path / "src", seed=7, files=30, big=(3_000_000, 2_000_000))
    devs = [tmp_path / f"d{i}" for i in range(3)]
    for d in devs:
        d.mkdir()
    urls = [str(devs[0]), f"faulty+file://{devs[1]}?fail_after=600K", f"{devs[2]}?limit=50M"]
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(src), *[a for u in urls for a in ("-d", u)], "--catalog", cat, "--json"
    )
    assert r.code == 3, r.err
    backup = r.json
    assert backup["status"] == "degraded"
    by_url = {d["url"]: d for d in backup["devices"]}
    assert by_url[urls[1]]["status"] == "failed"

    page = tmp_path / "report.html"
    r = run_cli("report", "latest", "--html", str(page), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "ok" and r.json["set"] == backup["set"]
    assert r.json["devices"] == 3
    assert 3 < r.json["samples"] <= 3 * 258  # bounded: MAX_SAMPLES a device, + ends
    text = page.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")

    dom = browse(chromium, tmp_path, page, "--dump-dom").stdout.decode()
    assert "<svg" in dom and "parbackup backup set " + backup["set"] in dom
    for url, d in by_url.items():
        attr = f'data-device="{html.escape(url)}"'
        assert f'class="device" {attr} data-bytes=' in dom, url  # its line on the timeline
        assert f'class="bar" {attr} data-bytes="{d["bytes"]}"' in dom  # its balance bar
        if d["status"] == "ok":  # the line ends at what the device holds
            assert f'class="device" {attr} data-bytes="{d["bytes"]}"' in dom
    assert f'class="failure" data-device="{html.escape(urls[1])}"' in dom
    went = by_url[urls[1]]["redirected"]
    assert went and sum(went.values()) > 0
    assert "failed at " in dom and "of its work went to the other devices" in dom

    shot = tmp_path / "shot.png"
    # tall enough for the balance bars: solid rectangles of each device's own colour (a
    # timeline line is antialiased, and may hold no pixel of the exact colour at all)
    browse(chromium, tmp_path, page, f"--screenshot={shot}", "--window-size=900,1600")
    colours = png_pixels(shot)
    if (255, 255, 255) not in colours:  # keep the evidence of a page that did not paint
        shutil.copy(shot, Path(tempfile.gettempdir()) / "parbackup-report-unpainted.png")
    for colour in ("#1f77b4", "#2ca02c", "#d62728"):  # bars of devices 1, 3; failure mark
        assert rgb(colour) in colours, colour


def backed_up(tmp_path: Path) -> str:
    """A small tree backed up onto two directories; the catalog's path."""
    src = make_tree(tmp_path / "src", seed=3, files=3)
    devs = [tmp_path / "a", tmp_path / "b"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    args = ("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert run_cli(*args).code == 0
    return cat


def test_report_of_an_unknown_set_is_one_line(tmp_path: Path) -> None:
    cat = backed_up(tmp_path)
    r = run_cli("report", "ffff", "--html", str(tmp_path / "x.html"), "--catalog", cat)
    assert r.code == 1 and r.err.count("\n") == 1 and "no backup set 'ffff'" in r.err
    assert not (tmp_path / "x.html").exists()


def test_a_report_onto_a_full_disk_names_the_file_and_keeps_the_old_page(
    tmp_path: Path, tmpfs
) -> None:
    """Before, the one line was "No space left on device", naming no file. The page
    written there before is left whole, and no temporary file beside it."""
    cat = backed_up(tmp_path)
    disk = tmpfs("full", "256k")
    page = disk / "report.html"
    assert run_cli("report", "latest", "--html", str(page), "--catalog", cat).code == 0
    before = page.read_bytes()
    assert b"</html>" in before
    fill_up(disk)
    r = run_cli("report", "latest", "--html", str(page), "--catalog", cat)
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert f"cannot write the report {page}: No space left on device" in r.err
    assert page.read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "report.html"]
    r = run_cli("report", "latest", "--html", str(disk / "new.html"), "--catalog", cat)
    assert r.code == 1 and not (disk / "new.html").exists()
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "report.html"]


def test_a_report_that_was_written_survives_a_power_cut(tmp_path: Path, ext4) -> None:
    """``wrote FILE`` means the page is on disk: a power cut (ext4 shut down with its
    journal unflushed, mounted again) right after leaves the page, whole. It was renamed
    into place unsynced before, and the cut took it back."""
    cat = backed_up(tmp_path)
    disk = ext4("pages", 16)
    sh("mount", "-o", "remount,commit=600", str(disk))  # nothing durable unless synced
    page = disk / "report.html"
    r = run_cli("report", "latest", "--html", str(page), "--catalog", cat)
    assert r.code == 0 and f"wrote {page}" in r.out, r.err
    written = page.read_bytes()
    power_cut(disk)
    assert page.read_bytes() == written
    assert sorted(p.name for p in disk.iterdir()) == ["lost+found", "report.html"]
