"""``report``: one self-contained HTML page showing how a backup went.

Drawn from the catalog alone (the set's stored report and its per-device progress
samples, engine/samples.py): each device's bytes over time, when a device failed and
where its work went, and the balance at the end.

The charts are inline SVG written here, not a plotting library: the page needs no
script, no network and no extra dependency (plotly would inline megabytes of
JavaScript, matplotlib is a large install for three simple charts), it opens in any
browser or mail client, and its elements carry the data (``data-device``,
``data-bytes``) so a test can check what is drawn.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from parbackup.catalog import Catalog, SetInfo
from parbackup.devices.url import human_bytes as _human

COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 820, 340, 90, 20, 20, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class Track:
    """One device's line: (seconds, bytes) points, its failure if any."""

    url: str
    colour: str
    points: list[tuple[float, int]] = field(default_factory=list)
    failed_at: float | None = None
    redirected: int = 0


@dataclass
class ReportPage:
    """What ``report`` wrote: the page and what it shows."""

    set: SetInfo
    html: str
    devices: int
    samples: int


def _tracks(info: SetInfo, samples: list[tuple]) -> list[Track]:
    urls = [d["url"] for d in (info.report or {}).get("devices", [])]
    for _t, url, *_rest in samples:
        if url not in urls:
            urls.append(url)
    tracks = {u: Track(u, COLOURS[i % len(COLOURS)]) for i, u in enumerate(urls)}
    for seconds, url, nbytes, event, redirected in samples:
        track = tracks[url]
        if event == "failed":
            track.failed_at, track.redirected = seconds, redirected
        track.points.append((seconds, nbytes))
    return list(tracks.values())


def _tag(name: str, text: str = "", **attrs: object) -> str:
    """One element; attribute names use '_' for '-' (``data_device``), values escaped,
    ``text`` is inserted as it is (escape user data with ``_e`` first)."""
    attr = "".join(f' {k.rstrip("_").replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    return f"<{name}{attr}/>" if not text and name != "text" else f"<{name}{attr}>{text}</{name}>"


def _svg(ident: str, height: float, label: str, body: list[str]) -> str:
    head = (
        _tag(
            "svg",
            "",
            id=ident,
            xmlns="http://www.w3.org/2000/svg",
            width=WIDTH,
            height=height,
            role="img",
            aria_label=label,
        )[:-2]
        + ">"
    )
    return "\n".join([head, *body, "</svg>"])


def _timeline(tracks: list[Track]) -> str:
    """Bytes moved by each device against seconds since the run started."""
    span = max((t for tr in tracks for t, _b in tr.points), default=0.0) or 1.0
    top = max((b for tr in tracks for _t, b in tr.points), default=0) or 1
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + w * t / span, 1)

    def y(b: float) -> float:
        return round(TOP + h - h * b / top, 1)

    out = [_tag("rect", x=LEFT, y=TOP, width=w, height=h, fill="#fafafa", stroke="#ccc")]
    for i in range(5):
        b, t = top * i / 4, span * i / 4
        out.append(
            _tag("text", _e(_human(b)), x=LEFT - 6, y=y(b) + 4, text_anchor="end", font_size=11)
        )
        out.append(
            _tag(
                "text",
                f"{t:.2f} s",
                x=x(t),
                y=HEIGHT - BOTTOM + 16,
                text_anchor="middle",
                font_size=11,
            )
        )
    for tr in tracks:
        pts = " ".join(f"{x(t)},{y(b)}" for t, b in tr.points)
        last = tr.points[-1][1] if tr.points else 0
        out.append(
            _tag(
                "polyline",
                class_="device",
                data_device=tr.url,
                data_bytes=last,
                fill="none",
                stroke=tr.colour,
                stroke_width=2,
                points=pts,
            )
        )
        if tr.failed_at is not None:
            fx = x(tr.failed_at)
            out.append(
                _tag(
                    "line",
                    class_="failure",
                    data_device=tr.url,
                    x1=fx,
                    x2=fx,
                    y1=TOP,
                    y2=TOP + h,
                    stroke="#d62728",
                    stroke_width=2,  # whole pixels of its colour wherever it falls
                    stroke_dasharray="5,4",
                )
            )
            left = fx > LEFT + w / 2  # the label on the side with room
            out.append(
                _tag(
                    "text",
                    f"failed: {_e(tr.url)}",
                    x=fx - 4 if left else fx + 4,
                    y=TOP + 14,
                    text_anchor="end" if left else "start",
                    font_size=12,
                    fill="#d62728",
                )
            )
    out.append(
        _tag(
            "text",
            "seconds since the backup started",
            x=LEFT + w / 2,
            y=HEIGHT - 4,
            text_anchor="middle",
            font_size=12,
        )
    )
    return _svg("timeline", HEIGHT, "bytes per device over time", out)


def _balance(devices: list[dict], colours: dict[str, str]) -> str:
    """Bytes each device holds at the end (a failed device's bar is grey)."""
    top = max((d.get("bytes", 0) for d in devices), default=0) or 1
    row, w = 26, WIDTH - LEFT - RIGHT - 120
    out = []
    for i, d in enumerate(devices):
        failed = d.get("status") != "ok"
        colour = "#bbbbbb" if failed else colours.get(d["url"], COLOURS[0])
        nbytes = d.get("bytes", 0)
        bw, yy = round(w * nbytes / top, 1), 5 + i * row
        out.append(
            _tag("text", f"device {i + 1}", x=LEFT - 6, y=yy + 15, text_anchor="end", font_size=11)
        )
        out.append(
            _tag(
                "rect",
                class_="bar",
                data_device=d["url"],
                data_bytes=nbytes,
                x=LEFT,
                y=yy,
                width=bw,
                height=row - 8,
                fill=colour,
            )
        )
        note = " (failed)" if failed else ""
        out.append(
            _tag("text", _e(_human(nbytes)) + note, x=LEFT + bw + 6, y=yy + 14, font_size=11)
        )
    return _svg("balance", row * len(devices) + 10, "bytes per device at the end", out)


def _device_table(devices: list[dict], tracks: dict[str, Track]) -> str:
    rows = []
    for i, d in enumerate(devices):
        went = ", ".join(f"{_human(n)} to {_e(u)}" for u, n in (d.get("redirected") or {}).items())
        failed = ""
        track = tracks.get(d["url"])
        if d.get("status") != "ok":  # the time on the timeline's clock where it has one
            at = (
                d.get("failed_at", 0)
                if track is None or track.failed_at is None
                else track.failed_at
            )
            failed = _e(f"at {at:.2f} s ({d.get('failed_utc', '')}): {d.get('error', '')}")
        colour = track.colour if track else "#000"
        swatch = _tag("span", "&#9632;", style=f"color:{colour}")
        cells = [
            f"{i + 1} {swatch}",
            _e(d["url"]),
            _e(d.get("status", "")),
            str(d.get("bytes", 0)),
            str(d.get("segments", 0)),
            str(d.get("seconds", 0)),
            failed,
            went,
        ]
        tds = "".join(_tag("td", c or "-") for c in cells)
        rows.append(_tag("tr", tds, class_="device-row", data_device=d["url"]))
    head = "".join(
        _tag("th", c)
        for c in (
            "#",
            "device",
            "status",
            "bytes",
            "segments",
            "busy s",
            "failed",
            "its work went to",
        )
    )
    return _tag("table", _tag("tr", head) + "".join(rows), id="devices")


STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
td.num{text-align:right}h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}"""


def render_report(catalog: Catalog, ref: str) -> ReportPage:
    """The page for the set ``ref`` names (catalog/setref.py)."""
    info = catalog.resolve_set(ref)
    samples = catalog.progress(info.id)
    report = info.report or {}
    devices = list(report.get("devices", []))
    tracks = _tracks(info, samples)
    colours = {t.url: t.colour for t in tracks}
    balance = report.get("balance", {})
    lines = [
        f"set {info.id}: {info.status}, {info.kind}, made {info.created}, finished "
        f"{info.finished or '-'}",
        f"sources: {' '.join(info.sources)}",
        f"{info.files} files, {_human(info.bytes)} copied, {_human(info.reused)} reused; "
        f"strategy {info.strategy}, threshold T {_human(info.threshold)}",
    ]
    if balance.get("devices"):
        lines.append(
            f"balance over the {balance['devices']} device(s) that finished: "
            f"{_human(balance['min_bytes'])} to {_human(balance['max_bytes'])} "
            f"(spread {balance['spread_bytes']} bytes)"
        )
    failed = [t for t in tracks if t.failed_at is not None]
    timeline = (
        _timeline(tracks)
        if samples
        else "<p>No progress samples were kept for this set (made by an older parbackup).</p>"
    )
    failures = "".join(
        f"<li>{_e(t.url)} failed at {t.failed_at:.2f} s; {_human(t.redirected)} of its work "
        "went to the other devices</li>"
        for t in failed
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>parbackup report: set {_e(info.id)}</title><style>{STYLE}</style></head>
<body>
<h1>parbackup backup set {_e(info.id)}</h1>
<ul id="summary">{"".join(f"<li>{_e(x)}</li>" for x in lines)}</ul>
<h2>Bytes per device over time</h2>
{timeline}
<h2>Device failures</h2>
<ul id="failures">{failures or "<li>none</li>"}</ul>
<h2>Balance at the end</h2>
{_balance(devices, colours)}
<h2>Devices</h2>
{_device_table(devices, {t.url: t for t in tracks})}
</body></html>
"""
    return ReportPage(info, page, len(devices), len(samples))
