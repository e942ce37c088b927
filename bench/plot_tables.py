"""Draw docs/img/*.svg from the tables in docs/BENCHMARKS.md (no plotting library).

    .venv/bin/python bench/plot_tables.py

Reads the tables the benchmarks printed (so a plot never disagrees with its table) and
writes small bar charts as plain SVG: they show on GitHub and in any browser.
"""

from __future__ import annotations

import html
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
OUT = ROOT / "docs" / "img"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def table_after(text: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the first markdown table whose header row starts with ``header_start``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                rows.append(dict(zip(head, cells, strict=True)))
            return rows
    raise SystemExit(f"no table starting {header_start!r} in {DOC}")


def bars(title: str, unit: str, items: list[tuple[str, float]], path: Path) -> None:
    """A horizontal bar chart: one labelled bar per item."""
    width, left, row = 760, 300, 28
    top = max(v for _l, v in items) or 1
    h = 40 + row * len(items)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
        f'font-family="sans-serif">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 32 + i * row
        w = (width - left - 90) * value / top
        out.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row - 8}" fill="{colour}"/>')
        out.append(
            f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12">{value:g} {unit}</text>'
        )
    out.append("</svg>\n")
    path.write_text("\n".join(out))


def main() -> None:
    text = DOC.read_text()
    OUT.mkdir(exist_ok=True)
    local = table_after(text, "| backup | wall s |")
    bars(
        "Backup throughput, 3 GB / 67k entries (bench/local.py, threaded engine)",
        "MB/s",
        [(r["backup"], float(r["MB/s"])) for r in local],
        OUT / "local-throughput.svg",
    )
    distant = table_after(text, "| data | hosts |")
    bars(
        "Distant devices at 50 Mbit/s each: speed-up over 1 host (bench/distant.py)",
        "x",
        [
            (f"{r['data']}, {r['hosts']} host(s)", float(r["speed-up vs 1 host"].rstrip("x")))
            for r in distant
        ],
        OUT / "distant-speedup.svg",
    )
    uneven = table_after(text, "| run | wall s | wall / ideal |")
    bars(
        "Uneven SFTP links (80/40/20 Mbit/s): last finish / ideal (bench/uneven.py --sftp)",
        "x ideal",
        [(r["run"], float(r["last finish / ideal"])) for r in uneven],
        OUT / "uneven-finish.svg",
    )


if __name__ == "__main__":
    main()
