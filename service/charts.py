"""Server-side SVG charts for the overview: no chart library, no script, prints as it shows.

Every label is escaped; the SVG is built here and inserted as markup."""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ("#8c1d18", "#d0743c", "#e8b04b", "#6f9a3a", "#2f7f7a", "#3a6ea5", "#6b4fa0", "#a34f86",
           "#7a7a7a", "#b88a5a", "#4d8f5f", "#c95b5b", "#5b7fc9", "#999933")


def stacked_weeks(weeks: list[str], series: dict[str, list[int]], width: int = 900, height: int = 240) -> Markup:
    n = len(weeks)
    if not n:
        return Markup("<p class='mute'>暂无数据</p>")
    totals = [sum(v[i] for v in series.values()) for i in range(n)]
    top = max(max(totals), 1)
    left, bottom, plot_h = 34, 22, height - 40
    bw = (width - left - 150) / n
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="每周留言量">']
    for frac in (0, 0.5, 1):
        y = 10 + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{left + bw * n}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>'
                     f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{int(top * frac)}</text>')
    for i in range(n):
        y = 10 + plot_h
        for k, (name, vals) in enumerate(series.items()):
            h = plot_h * vals[i] / top
            if h > 0:
                y -= h
                parts.append(f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                             f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(name)} {escape(weeks[i])}：{vals[i]}</title></rect>')
        if i % max(1, n // 6) == 0:
            parts.append(f'<text x="{left + i * bw:.1f}" y="{height - 6}">{escape(weeks[i][5:])}</text>')
    for k, name in enumerate(list(series)[:12]):
        y = 16 + k * 16
        parts.append(f'<rect x="{width - 140}" y="{y - 9}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>'
                     f'<text x="{width - 126}" y="{y}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(items: dict[str, int], width: int = 420, row: int = 24) -> Markup:
    if not items:
        return Markup("<p class='mute'>暂无数据</p>")
    top = max(max(items.values()), 1)
    height = row * len(items) + 8
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img">']
    for k, (name, v) in enumerate(items.items()):
        y = 4 + k * row
        w = (width - 170) * v / top
        parts.append(f'<text x="0" y="{y + 15}">{escape(name)}</text>'
                     f'<rect x="120" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{PALETTE[k % len(PALETTE)]}"/>'
                     f'<text x="{124 + w:.1f}" y="{y + 15}">{v}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
