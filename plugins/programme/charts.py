"""Charts drawn on the server as SVG: no script, no external file, readable by screen readers
(a title and a description, and the page shows the same numbers as a table)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH = 640
BAR_HEIGHT = 22
LABEL_WIDTH = 200


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover


def count_ticks(peak: float, steps: int = 4) -> list[int]:
    """Whole-number y-axis ticks from 0 to at least `peak`, for counts: at most `steps` steps
    of 1, 2 or 5 times a power of ten (a peak of 3 gives 0, 1, 2, 3, never 0.75 or 1.5)."""
    target = max(float(peak), 1.0) / steps
    power = 10 ** max(0, math.floor(math.log10(target)))
    step = next((m * power for m in (1, 2, 5, 10) if m * power >= target), 10 * power)
    top = max(1, math.ceil(peak / step)) * step
    return list(range(0, int(top) + 1, int(step)))


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def _open(uid: str, title: str, desc: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'preserveAspectRatio="xMinYMin meet">',
        f'<title id="{uid}-t">{escape(title)}</title>',
        f'<desc id="{uid}-d">{escape(desc)}</desc>',
    ]


def bars(
    uid: str, title: str, labels: Sequence[str], values: Sequence[float], *, unit: str = ""
) -> str:
    """Horizontal bars, one per label, with the value written at the end of each."""
    n = len(labels)
    height = max(1, n) * (BAR_HEIGHT + 6) + 30
    top = max(values, default=0)
    scale = nice_max(top)
    span = WIDTH - LABEL_WIDTH - 70
    desc = "; ".join(f"{lab}: {_fmt(v)}{unit}" for lab, v in zip(labels, values, strict=True))
    out = _open(uid, title, desc or "no data", WIDTH, height)
    if not n:
        out.append('<text x="10" y="20" class="muted">no data for this period</text>')
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 10 + i * (BAR_HEIGHT + 6)
        w = 0 if scale == 0 else max(0.0, span * value / scale)
        short = label if len(label) <= 26 else label[:25] + "…"
        out.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT * 0.7:.1f}" text-anchor="end" '
            f'class="label">{escape(short)}</text>'
        )
        out.append(
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{w:.1f}" height="{BAR_HEIGHT}" '
            f'class="bar" fill="#2a6f97"><title>{escape(label)}: {_fmt(value)}{unit}</title></rect>'
        )
        out.append(
            f'<text x="{LABEL_WIDTH + w + 6:.1f}" y="{y + BAR_HEIGHT * 0.7:.1f}" '
            f'class="value">{_fmt(value)}{escape(unit)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def columns(
    uid: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
) -> str:
    """Vertical columns over time (one group per label, one column per series) of counts, with
    a y axis in whole numbers and every n-th label so they do not overlap."""
    height, left, bottom, top_pad = 260, 48, 40, 14
    n = len(labels)
    plot_w, plot_h = WIDTH - left - 10, height - bottom - top_pad
    peak = max((v for _, vals in series for v in vals), default=0)
    ticks = count_ticks(peak)  # counts: whole numbers on the axis
    scale = ticks[-1]
    desc_parts = []
    for name, vals in series:
        total = sum(vals)
        desc_parts.append(
            f"{name}: {_fmt(total)} in total, at most {_fmt(max(vals, default=0))} a day"
        )
    out = _open(uid, title, "; ".join(desc_parts) or "no data", WIDTH, height)
    for tick in ticks:  # grid lines and y labels
        y = top_pad + plot_h - plot_h * tick / scale
        out.append(
            f'<line x1="{left}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'class="axis">{_fmt(tick)}</text>'
        )
    if n:
        group = plot_w / n
        width = max(1.0, group * 0.8 / max(1, len(series)))
        every = max(1, math.ceil(n / 10))
        palette = ("#2a6f97", "#e07a5f", "#81b29a", "#f2cc8f")
        for s, (name, vals) in enumerate(series):
            colour = palette[s % len(palette)]
            for i, value in enumerate(vals):
                h = plot_h * value / scale if scale else 0
                x = left + i * group + group * 0.1 + s * width
                out.append(
                    f'<rect x="{x:.1f}" y="{top_pad + plot_h - h:.1f}" width="{width:.1f}" '
                    f'height="{h:.1f}" fill="{colour}" class="col s{s}">'
                    f"<title>{escape(labels[i])} {escape(name)}: {_fmt(value)}</title></rect>"
                )
        for i in range(0, n, every):
            x = left + i * group + group / 2
            out.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'class="axis">{escape(labels[i])}</text>'
            )
        if len(series) > 1:
            for s, (name, _) in enumerate(series):
                x = left + 10 + s * 130
                out.append(
                    f'<rect x="{x}" y="{height - 14}" width="10" height="10" '
                    f'fill="{palette[s % len(palette)]}"/>'
                )
                out.append(
                    f'<text x="{x + 14}" y="{height - 5}" class="axis">{escape(name)}</text>'
                )
    else:
        out.append(f'<text x="{left + 10}" y="{top_pad + 20}" class="muted">no data</text>')
    out.append("</svg>")
    return "".join(out)
