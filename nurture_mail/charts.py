"""Inline SVG charts for the HTML report: no JavaScript, no external assets, printable.

Each function returns a complete `<svg>` element as Markup; every label is escaped here.
An empty series still draws a chart frame with a "no data yet" line, so a page always has
its charts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

INK = "#222"
MUTED = "#777"
GRID = "#e3e3e3"
SENT = "#9ab8d8"
REPLY = "#1f5f99"
BAR = "#2f7d5b"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # what is written at the end of the bar
    note: str = ""  # a muted second label, under the bar


def _svg(width: int, height: int, title: str, body: str) -> Markup:
    t = escape(title)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{t}" {FONT}><title>{t}</title>{body}</svg>'
    )


def _empty(width: int, title: str) -> Markup:
    body = (f'<rect x="0.5" y="0.5" width="{width - 1}" height="59" fill="none" stroke="{GRID}"/>'
            f'<text x="{width / 2}" y="34" text-anchor="middle" fill="{MUTED}">no data yet</text>')
    return _svg(width, 60, title, body)


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value: 1, 2, 5 x 10^n."""
    if value <= 0:
        return 1
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def weekly_chart(weeks: Sequence[tuple[date, int, int]], title: str = "Sends and replies per week") -> Markup:
    """Paired columns per week: sends accepted (light) and replies (dark)."""
    width, height = 760, 240
    if not weeks:
        return _empty(width, title)
    left, right, top, bottom = 44, 12, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max(max(s, r) for _, s, r in weeks))
    slot = plot_w / len(weeks)
    bar_w = max(1.0, min(18.0, slot * 0.38))
    parts = []
    for i in range(5):  # grid and y labels
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{value:g}</text>')
    every = max(1, round(len(weeks) / 10))
    for i, (week, sent, replied) in enumerate(weeks):
        x = left + slot * i + slot / 2
        for offset, value, color, what in ((-bar_w, sent, SENT, "sent"), (0, replied, REPLY, "replied")):
            h = plot_h * value / top_value
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{escape(week.isoformat())}: {value} {what}</title></rect>'
            )
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="{MUTED}">'
                         f'{escape(week.strftime("%d %b"))}</text>')
    parts.append(f'<rect x="{left}" y="6" width="10" height="10" fill="{SENT}"/>'
                 f'<text x="{left + 14}" y="15" fill="{INK}">sent</text>'
                 f'<rect x="{left + 60}" y="6" width="10" height="10" fill="{REPLY}"/>'
                 f'<text x="{left + 74}" y="15" fill="{INK}">replied</text>'
                 f'<text x="{width - right}" y="{height - 6}" text-anchor="end" fill="{MUTED}">week starting (UTC)</text>')
    return _svg(width, height, title, "".join(parts))


def bar_chart(bars: Sequence[Bar], title: str, *, maximum: float | None = None, color: str = BAR) -> Markup:
    """Horizontal bars with a label on the left and the value written after the bar."""
    width = 760
    if not bars:
        return _empty(width, title)
    label_w, text_w, row_h = 230, 150, 30
    plot_w = width - label_w - text_w
    top_value = maximum if maximum is not None else max((b.value for b in bars), default=0) or 1
    parts = []
    for i, b in enumerate(bars):
        y = 8 + i * row_h
        w = 0 if top_value <= 0 else plot_w * min(b.value, top_value) / top_value
        label = b.label if len(b.label) <= 34 else b.label[:33] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" fill="{INK}">{escape(label)}'
                     f'<title>{escape(b.label)}</title></text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{plot_w}" height="16" fill="{GRID}" opacity="0.45"/>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="16" fill="{color}"/>')
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{y + 14}" fill="{INK}">{escape(b.text)}</text>')
        if b.note:
            parts.append(f'<text x="{label_w}" y="{y + 29}" fill="{MUTED}" font-size="10">{escape(b.note)}</text>')
    height = 16 + len(bars) * row_h
    return _svg(width, height, title, "".join(parts))
