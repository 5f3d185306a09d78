"""Server-side SVG charts for the usage dashboard: no JavaScript, no library, nothing from the internet.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>``
(what a screen reader announces), text labels on its axes and a ``<title>``
on every bar (the number, as a tooltip). Every text is escaped; colours are
presentation attributes, so the page's Content-Security-Policy (no inline
styles) holds. The page puts a table with the same numbers under each chart.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#0b6e4f", "#2f80b7", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#92400e")
GREY = "#9ca3af"
SHADE = "#e8ecf1"
TEXT = "#1d2430"
MUTED = "#5b6676"
FONT = 'font-family="system-ui, sans-serif"'


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[int]
    colour: str


def colours(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def nice_ceiling(value: float) -> int:
    """The top of an axis of four equal steps: the smallest round number at least ``value`` that 4 divides."""
    if value <= 4:
        return 4
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10):
        top = round(m * power)
        if top >= value and top % 4 == 0:
            return top
    return 4 * math.ceil(value / 4)


def _svg(chart_id: str, width: int, height: int, title: str, desc: str, body: list[str]) -> Markup:
    cid = escape(chart_id)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" id="{cid}" '
        f'aria-labelledby="{cid}-title {cid}-desc" {FONT}><title id="{cid}-title">{escape(title)}</title>'
        f'<desc id="{cid}-desc">{escape(desc)}</desc>{"".join(body)}</svg>'
    )


def _y_axis(body: list[str], top: int, left: int, right: int, plot_h: int, y_max: int) -> None:
    for i in range(5):
        value = y_max * i // 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{SHADE}"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">'
                    f"{value}</text>")


def text_width(text: str, size: int = 12) -> float:
    """About how wide ``text`` is drawn: Chinese characters take a full em, Latin ones a little over half."""
    return sum(size if ord(ch) > 0x2E80 else size * 0.6 for ch in text)


def _legend(body: list[str], items: Sequence[tuple[str, str]], x: int, y: int, width: int) -> None:
    """Swatches with their labels, wrapped onto lines of ``width``."""
    cx, cy = x, y
    for label, colour in items:
        span = 30 + text_width(label[:30])
        if cx + span > x + width and cx > x:
            cx, cy = x, cy + 18
        body.append(f'<rect x="{cx}" y="{cy - 10}" width="12" height="12" fill="{colour}"/>')
        body.append(f'<text x="{cx + 16}" y="{cy}" font-size="12" fill="{TEXT}">{escape(label[:30])}</text>')
        cx += span


def stacked_bars(chart_id: str, title: str, desc: str, labels: Sequence[str], series: Sequence[Series],
                 *, unit: str = "") -> Markup:
    """Vertical bars, one per label (e.g. a day), each stacked from ``series`` (e.g. stations)."""
    width, left, right, top = 900, 52, 890, 12
    legend_lines = 1 + int(sum(text_width(s.label[:30]) + 30 for s in series) // (right - left))
    plot_h = 200
    height = top + plot_h + 34 + 18 * legend_lines
    n = max(len(labels), 1)
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    y_max = nice_ceiling(max(totals, default=0))
    body: list[str] = []
    _y_axis(body, top, left, right, plot_h, y_max)
    step = (right - left) / n
    bar_w = max(step * 0.8, 1.0)
    every = max(1, math.ceil(n / 12))  # at most about a dozen labels under the axis
    for i, label in enumerate(labels):
        x = left + i * step + (step - bar_w) / 2
        base = top + plot_h
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            h = plot_h * v / y_max
            base -= h
            tip = f"{label} · {s.label}: {v}{unit}"
            body.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{s.colour}">'
                        f"<title>{escape(tip)}</title></rect>")
        if i % every == 0:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11" '
                        f'fill="{MUTED}">{escape(label)}</text>')
    _legend(body, [(s.label, s.colour) for s in series], left, top + plot_h + 40, right - left)
    return _svg(chart_id, width, height, title, desc, body)


def hour_bars(chart_id: str, title: str, desc: str, values: Sequence[int], shaded: Collection[int],
              shaded_label: str, bar_label: str) -> Markup:
    """24 bars by hour of day; the ``shaded`` hours (the night) get a grey band behind them."""
    width, left, right, top, plot_h = 900, 52, 890, 12, 180
    height = top + plot_h + 58
    y_max = nice_ceiling(max(values, default=0))
    step = (right - left) / 24
    body: list[str] = []
    for h in sorted(shaded):
        body.append(f'<rect x="{left + h * step:.1f}" y="{top}" width="{step:.1f}" height="{plot_h}" fill="{SHADE}"/>')
    _y_axis(body, top, left, right, plot_h, y_max)
    for h, v in enumerate(values):
        x = left + h * step + step * 0.15
        bar_h = plot_h * v / y_max
        colour = PALETTE[3] if h in shaded else PALETTE[0]
        tip = f"{h:02d}:00–{(h + 1) % 24:02d}:00: {v}"
        body.append(f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{step * 0.7:.1f}" height="{bar_h:.1f}" '
                    f'fill="{colour}"><title>{escape(tip)}</title></rect>')
        body.append(f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11" '
                    f'fill="{MUTED}">{h:02d}</text>')
    _legend(body, [(bar_label, PALETTE[0]), (shaded_label, PALETTE[3])], left, top + plot_h + 42, right - left)
    return _svg(chart_id, width, height, title, desc, body)


def horizontal_bars(chart_id: str, title: str, desc: str, items: Sequence[tuple[str, int]],
                    colour: str = PALETTE[1]) -> Markup:
    """One labelled bar per item, largest value first as given, with the number at its end."""
    width, label_w, row_h, top = 600, 200, 26, 6
    height = top + row_h * max(len(items), 1) + 6
    x_max = nice_ceiling(max((v for _l, v in items), default=0))
    plot_w = width - label_w - 70
    body: list[str] = []
    for i, (label, v) in enumerate(items):
        y = top + i * row_h
        w = plot_w * v / x_max
        short = label
        while text_width(short) > label_w - 12:
            short = short[:-2] + "…"
        body.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" font-size="12" fill="{TEXT}">'
                    f"{escape(short)}</text>")
        body.append(f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}">'
                    f"<title>{escape(label)}: {v}</title></rect>")
        body.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" font-size="12" fill="{TEXT}">{v}</text>')
    return _svg(chart_id, width, height, title, desc, body)
