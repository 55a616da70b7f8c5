"""A small SVG chart renderer: Decimal series in, an inline ``<svg>`` out, drawn on the server.

Nothing is downloaded and no script runs: the page carries the drawing. Values stay Decimal
down to the pixel (coordinates are quantized to 0.01 px), so a chart never rounds usage through
a float. Every bar and point carries its exact value (``data-series``, ``data-label``,
``data-value`` and a ``<title>`` tooltip), which is what the browser tests read.

* one series: bars (a meter's usage per window);
* several series: lines with points and a legend (a meter grouped by a dimension; a burn-down's
  balance and usage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH = Decimal(760)
HEIGHT = Decimal(260)
LEFT = Decimal(64)
RIGHT = Decimal(12)
TOP = Decimal(12)
BOTTOM = Decimal(30)
X_LABELS_MAX = 8
PALETTE = ("#2f6fdf", "#e0782b", "#2a9d6f", "#b04bc4", "#c9423a", "#6b7a8f", "#c2a11d", "#1f9eb8")
_PX = Decimal("0.01")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Decimal | None]
    """One value per label; None: no point there."""


def plain(value: Decimal) -> str:
    """A Decimal's exact value without trailing zeros or an exponent (``100``, ``12.5``)."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _px(value: Decimal) -> str:
    return f"{value.quantize(_PX):f}"


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 × 10ⁿ that is ≥ value (value > 0)."""
    base = Decimal(1).scaleb(value.adjusted())
    for step in (1, 2, 5, 10):
        if value <= base * step:
            return base * step
    return base * 10  # pragma: no cover - value ≤ 10 × base by construction


def _range(series: Sequence[Series]) -> tuple[Decimal, Decimal]:
    present = [v for s in series for v in s.values if v is not None]
    high = max([Decimal(0), *present])
    low = min([Decimal(0), *present])
    top = nice_ceiling(high) if high > 0 else Decimal(0)
    bottom = -nice_ceiling(-low) if low < 0 else Decimal(0)
    if top == bottom:
        top = Decimal(1)
    return bottom, top


def _short(value: Decimal) -> str:
    """An axis label: 1.5k, 20M, 0.25."""
    for size, suffix in ((Decimal(10) ** 9, "G"), (Decimal(10) ** 6, "M"), (Decimal(1000), "k")):
        if abs(value) >= size:
            value, text = value / size, suffix
            break
    else:
        text = ""
    shown = f"{value.quantize(Decimal('0.01')).normalize():f}"
    return shown + text


def chart(labels: Sequence[str], series: Sequence[Series], *, title: str, unit: str = "") -> Markup:
    """An SVG of ``series`` over ``labels`` (one bar chart when there is one series)."""
    if not labels or not series:
        return Markup('<p class="empty">No data in this range.</p>')
    bottom, top = _range(series)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    span = top - bottom
    slot = plot_w / len(labels)

    def y(value: Decimal) -> Decimal:
        return TOP + plot_h - (value - bottom) * plot_h / span

    kind = "bars" if len(series) == 1 else "lines"
    out: list[str] = [
        f'<svg class="chart" data-chart="{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # grid and y labels
        value = bottom + span * i / 4
        gy = _px(y(value))
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy}" y2="{gy}"/>')
        out.append(
            f'<text class="axis" x="{LEFT - 6}" y="{gy}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(_short(value))}</text>'
        )
    every = max(1, -(-len(labels) // X_LABELS_MAX))
    for i, label in enumerate(labels):
        if i % every == 0:
            cx = _px(LEFT + slot * i + slot / 2)
            out.append(
                f'<text class="axis" x="{cx}" y="{HEIGHT - 10}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    zero = _px(y(Decimal(0)))
    out.append(f'<line class="zero" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{zero}" y2="{zero}"/>')
    if kind == "bars":
        out.extend(_bars(labels, series[0], slot, y, unit))
    else:
        for n, s in enumerate(series):
            out.extend(_line(labels, s, slot, y, PALETTE[n % len(PALETTE)], unit))
    out.append("</svg>")
    if kind == "lines":
        out.append('<ul class="legend">')
        for n, s in enumerate(series):
            color = PALETTE[n % len(PALETTE)]
            out.append(
                f'<li><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true">'
                f'<rect width="10" height="10" rx="2" fill="{color}"/></svg>{escape(s.name)}</li>'
            )
        out.append("</ul>")
    return Markup("".join(out))


def _tip(series: str, label: str, value: Decimal, unit: str) -> str:
    name = f"{series} · " if series else ""
    return f"{name}{label}: {plain(value)}{(' ' + unit) if unit else ''}"


def _data(series: str, label: str, value: Decimal) -> str:
    return (
        f'data-series="{escape(series)}" data-label="{escape(label)}" data-value="{plain(value)}"'
    )


Scale = Callable[[Decimal], Decimal]


def _bars(labels: Sequence[str], s: Series, slot: Decimal, y: Scale, unit: str) -> list[str]:
    out: list[str] = []
    width = slot * Decimal("0.78")
    for i, (label, value) in enumerate(zip(labels, s.values, strict=True)):
        if value is None:
            continue
        x = LEFT + slot * i + (slot - width) / 2
        y0, y1 = y(Decimal(0)), y(value)
        top, height = min(y0, y1), abs(y0 - y1)
        out.append(
            f'<rect class="bar" x="{_px(x)}" y="{_px(top)}" width="{_px(width)}" '
            f'height="{_px(height)}" {_data(s.name, label, value)}>'
            f"<title>{escape(_tip(s.name, label, value, unit))}</title></rect>"
        )
    return out


def _line(
    labels: Sequence[str], s: Series, slot: Decimal, y: Scale, color: str, unit: str
) -> list[str]:
    points: list[str] = []
    dots: list[str] = []
    for i, (label, value) in enumerate(zip(labels, s.values, strict=True)):
        if value is None:
            continue
        cx, cy = _px(LEFT + slot * i + slot / 2), _px(y(value))
        points.append(f"{cx},{cy}")
        dots.append(
            f'<circle class="point" cx="{cx}" cy="{cy}" r="3" fill="{color}" '
            f"{_data(s.name, label, value)}>"
            f"<title>{escape(_tip(s.name, label, value, unit))}</title></circle>"
        )
    line = f'<polyline class="line" fill="none" stroke="{color}" points="{" ".join(points)}"/>'
    return [line, *dots]


def gauge(used: Decimal | None, limit: Decimal | None) -> Markup:
    """A horizontal bar: ``used`` against ``limit`` (full and red past the limit; grey when
    there is no limit). SVG, not a styled div: the console's CSP allows no inline styles."""
    if used is None:
        return Markup('<span class="muted">—</span>')
    if limit is None or limit <= 0:
        share, state = Decimal(0), "nolimit"
    else:
        share = min(Decimal(100), max(Decimal(0), used * 100 / limit))
        state = "over" if used > limit else ("near" if share >= 80 else "ok")
    return Markup(
        f'<svg class="gauge {state}" viewBox="0 0 100 8" preserveAspectRatio="none" '
        f'data-used="{plain(used)}" data-limit="{"" if limit is None else plain(limit)}" '
        f'role="img" aria-label="{share.quantize(Decimal(1)):f}%">'
        f'<rect class="track" width="100" height="8" rx="2"/>'
        f'<rect class="fill" width="{_px(share)}" height="8" rx="2"/></svg>'
    )
