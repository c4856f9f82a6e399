"""Figures as inline SVG, drawn here rather than with a plotting library: a bar chart is a few rectangles, and
writing them ourselves keeps the bytes deterministic (no ids, dates or font metrics from a renderer), the file
self-contained and the base install small. Every text drawn is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from distill.output.render import fmt_number

WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 26, 56
# Colour-blind-safe (Okabe-Ito), cycled for stacked series.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bin_label(low: float, high: float | None) -> str:
    return f"≥{fmt_number(low)}" if high is None else f"{fmt_number(low)}–{fmt_number(high)}"


def histogram_bars(histogram: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(label, count) per bin of a stats.json histogram, with the under / over bins when they hold anything."""
    edges, counts = histogram["edges"], histogram["counts"]
    bars = [(_bin_label(edges[i], edges[i + 1]), counts[i]) for i in range(len(counts))]
    if histogram["under"]:
        bars.insert(0, (f"<{fmt_number(edges[0])}", histogram["under"]))
    if histogram["over"]:
        bars.append((f">{fmt_number(edges[-1])}", histogram["over"]))
    # Empty bins at either end say nothing (a reward histogram of 0..1 scores need not show -1..0).
    first = next((i for i, (_, n) in enumerate(bars) if n), 0)
    last = max((i for i, (_, n) in enumerate(bars) if n), default=len(bars) - 1)
    return bars[first : last + 1]


def bar_chart(title: str, bars: Sequence[tuple[str, int | float]], *, color: str = PALETTE[0]) -> Markup:
    """A vertical bar chart, one bar per (label, value)."""
    return stacked_bar_chart(title, [label for label, _ in bars], {"": [value for _, value in bars]}, colors=[color])


def stacked_bar_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[int | float]],
    *,
    colors: Sequence[str] = PALETTE,
) -> Markup:
    """Bars stacked from `series` (name -> one value per label), with a legend when there is more than one series."""
    names = list(series)
    legend = names[:8] if len(names) > 1 else []
    top_margin = TOP + 12 * ((len(legend) + 2) // 3)
    totals = [sum(series[name][i] or 0 for name in names) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - top_margin - BOTTOM
    step = plot_w / max(len(labels), 1)
    bar_w = max(step * 0.8, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="12" class="chart-title">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{top_margin + plot_h}" x2="{WIDTH - RIGHT}" y2="{top_margin + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{top_margin + 4}" class="tick" text-anchor="end">{escape(fmt_number(top))}</text>',
        f'<text x="{LEFT - 4}" y="{top_margin + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for k, name in enumerate(legend):
        lx, ly = 4 + 138 * (k % 3), TOP + 12 * (k // 3)
        parts.append(f'<rect x="{lx}" y="{ly - 8}" width="8" height="8" fill="{colors[k % len(colors)]}"/>')
        parts.append(f'<text x="{lx + 11}" y="{ly}" class="tick">{escape(_short(name, 24))}</text>')
    label_every = max(1, len(labels) // 12)
    for i, label in enumerate(labels):
        x = LEFT + i * step + (step - bar_w) / 2
        base = top_margin + plot_h
        for k, name in enumerate(names):
            value = series[name][i] or 0
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            tip = f"{label}: {fmt_number(value)}" if not name else f"{label} · {name}: {fmt_number(value)}"
            parts.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" height="{height:.2f}" '
                f'fill="{colors[k % len(colors)]}"><title>{escape(tip)}</title></rect>'
            )
        if i % label_every == 0:
            cx, cy = x + bar_w / 2, top_margin + plot_h + 10
            parts.append(
                f'<text x="{cx:.2f}" y="{cy}" class="tick" text-anchor="end" '
                f'transform="rotate(-40 {cx:.2f} {cy})">{escape(_short(label, 22))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram_chart(title: str, histogram: Mapping[str, Any] | None) -> Markup:
    """A stats.json histogram as a bar chart; a short note when it holds no value."""
    if not histogram or not (sum(histogram["counts"]) + histogram["under"] + histogram["over"]):
        return Markup('<p class="muted">{}: no values</p>').format(title)
    return bar_chart(title, histogram_bars(histogram))
