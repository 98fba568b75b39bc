"""Pure: a released report as an inline SVG chart, drawn here on the server (no script, no
CDN). One horizontal bar per cell for the report's headline number, with its 95% interval as
a whisker; bars are grouped by the first key."""

from collections.abc import Sequence
from html import escape
from typing import Any

ROW, GAP, LABEL_W, PLOT_W, TOP = 16, 10, 260, 420, 34
BAR, WHISKER, AXIS = "#4c72b0", "#222", "#999"


def chart_svg(
    rows: Sequence[dict[str, Any]], *, keys: Sequence[str], value: str, title: str
) -> str:
    """rows: the release's result rows; value: the headline column (with value_low and
    value_high beside it)."""
    lows = [r[f"{value}_low"] for r in rows]
    highs = [r[f"{value}_high"] for r in rows]
    lo = min([0.0, *lows]) if rows else 0.0
    hi = max([1e-9, *highs]) if rows else 1.0
    if hi <= lo:
        hi = lo + 1

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * PLOT_W

    parts, y, previous = [], TOP, None
    for row in rows:
        group = row[keys[0]]
        if previous is not None and group != previous:
            y += GAP
        previous = group
        label = " · ".join(str(row[k]) for k in keys)
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y + ROW - 4}" text-anchor="end">{escape(label)}</text>'
        )
        estimate = row[value]
        if estimate is None:
            parts.append(f'<text x="{x(lo) + 4:.1f}" y="{y + ROW - 4}" fill="#777">n/a</text>')
        else:
            left, right = sorted((x(0.0) if lo <= 0 <= hi else x(lo), x(estimate)))
            parts.append(
                f'<rect x="{left:.1f}" y="{y + 2}" width="{max(right - left, 0.5):.1f}" '
                f'height="{ROW - 4}" fill="{BAR}"><title>{escape(label)}: '
                f"{estimate:g} [{row[f'{value}_low']:g}, {row[f'{value}_high']:g}]</title></rect>"
            )
        mid = y + ROW / 2
        x_lo, x_hi = x(row[f"{value}_low"]), x(row[f"{value}_high"])
        parts.append(
            f'<path d="M{x_lo:.1f} {mid - 4}v8M{x_lo:.1f} {mid}H{x_hi:.1f}M{x_hi:.1f} {mid - 4}v8" '
            f'stroke="{WHISKER}" fill="none"/>'
        )
        y += ROW
    height = y + 30
    axis = _axis(lo, hi, x, TOP - 6, height - 24)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{LABEL_W + PLOT_W + 40}" '
        f'height="{height}" viewBox="0 0 {LABEL_W + PLOT_W + 40} {height}" '
        f'font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
        f'<text x="{LABEL_W}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
        f"{axis}{''.join(parts)}</svg>"
    )


def _axis(lo: float, hi: float, x: Any, top: float, bottom: float) -> str:
    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    out = [f'<line x1="{x(lo):.1f}" y1="{bottom}" x2="{x(hi):.1f}" y2="{bottom}" stroke="{AXIS}"/>']
    for t in ticks:
        out.append(
            f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{bottom}" '
            f'stroke="#eee"/><text x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{t:.3g}</text>"
        )
    if lo < 0 < hi:
        out.append(
            f'<line x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{bottom}" stroke="{AXIS}"/>'
        )
    return "".join(out)
