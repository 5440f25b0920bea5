"""Tiny dependency-free SVG charts for benchmark reports: line charts (e.g. CDFs) and grouped bars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
PANEL_W, PANEL_H = 520, 340
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 34, 46


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


class _Panel:
    """Axes inside one panel at (x0, y0) of the figure."""

    def __init__(self, x0: float, y0: float, title: str, xlabel: str, ylabel: str):
        self.x0, self.y0 = x0, y0
        self.left, self.top = x0 + MARGIN_L, y0 + MARGIN_T
        self.w, self.h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
        self.parts = [
            f'<text x="{x0 + PANEL_W / 2}" y="{y0 + 20}" text-anchor="middle" '
            f'font-weight="bold">{escape(title)}</text>',
            f'<text x="{self.left + self.w / 2}" y="{y0 + PANEL_H - 8}" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text transform="translate({x0 + 14},{self.top + self.h / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(ylabel)}</text>',
            f'<rect x="{self.left}" y="{self.top}" width="{self.w}" height="{self.h}" fill="none" stroke="#333"/>',
        ]

    def y_axis(self, lo: float, hi: float) -> None:
        self.ylo, self.yhi = lo, hi
        for t in _nice_ticks(lo, hi):
            y = self.sy(t)
            self._tick(t, (self.left, y, self.left + self.w, y), "#ddd", (self.left - 4, y + 4), "end")

    def x_axis(self, lo: float, hi: float) -> None:
        self.xlo, self.xhi = lo, hi
        for t in _nice_ticks(lo, hi):
            x = self.sx(t)
            self._tick(t, (x, self.top, x, self.top + self.h), "#eee", (x, self.top + self.h + 15), "middle")

    def _tick(self, value: float, line: tuple[float, float, float, float], color: str,
              at: tuple[float, float], anchor: str) -> None:
        """A grid line (x1, y1, x2, y2) and the tick's label at ``at``."""
        x1, y1, x2, y2 = line
        self.parts.append(f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="{color}"/>'
                          f'<text x="{at[0]:.1f}" y="{at[1]:.1f}" text-anchor="{anchor}" font-size="11">'
                          f'{_fmt(value)}</text>')

    def sx(self, v: float) -> float:
        return self.left + (v - self.xlo) / ((self.xhi - self.xlo) or 1) * self.w

    def sy(self, v: float) -> float:
        return self.top + self.h - (v - self.ylo) / ((self.yhi - self.ylo) or 1) * self.h

    def legend(self, names: Sequence[str], bottom: bool = True) -> None:
        y = self.top + self.h - 14 * len(names) - 4 if bottom else self.top + 6
        for i, name in enumerate(names):
            c = COLORS[i % len(COLORS)]
            yy = y + 14 * i
            self.parts.append(f'<rect x="{self.left + self.w - 150}" y="{yy}" width="10" height="10" fill="{c}"/>'
                              f'<text x="{self.left + self.w - 136}" y="{yy + 9}" font-size="11">{escape(name)}</text>')


def _figure(panels: list[_Panel], columns: int) -> str:
    rows = math.ceil(len(panels) / columns)
    w, h = PANEL_W * min(columns, len(panels)), PANEL_H * rows
    body = "\n".join(p for panel in panels for p in panel.parts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif" font-size="12">\n<rect width="{w}" height="{h}" fill="white"/>\n'
            f'{body}\n</svg>\n')


def cdf_panel(x0: float, y0: float, samples: Mapping[str, Sequence[float]], title: str, xlabel: str) -> _Panel:
    """Empirical CDF of each named sample set."""
    p = _Panel(x0, y0, title, xlabel, "fraction of requests")
    values = [v for vs in samples.values() for v in vs if math.isfinite(v)]
    p.x_axis(0.0, max(values) * 1.02 if values and max(values) > 0 else 1.0)
    p.y_axis(0.0, 1.0)
    for i, (name, vs) in enumerate(samples.items()):
        xs = sorted(v for v in vs if math.isfinite(v))
        if not xs:
            continue
        n = len(xs)
        pts = [f"{p.sx(x):.1f},{p.sy((k + 1) / n):.1f}" for k, x in enumerate(xs)]
        pts.insert(0, f"{p.sx(xs[0]):.1f},{p.sy(0):.1f}")
        p.parts.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="1.5" '
                       f'points="{" ".join(pts)}"/>')
    p.legend(list(samples))
    return p


def bar_panel(x0: float, y0: float, groups: Sequence[str], series: Mapping[str, Sequence[float]],
              title: str, ylabel: str) -> _Panel:
    """Grouped bars: one group per entry of ``groups``, one bar per series in each group."""
    p = _Panel(x0, y0, title, "", ylabel)
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    p.y_axis(0.0, max(values) * 1.1 if values and max(values) > 0 else 1.0)
    p.xlo, p.xhi = 0.0, float(len(groups))
    gw = p.w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        p.parts.append(f'<text x="{p.left + gw * (g + 0.5):.1f}" y="{p.top + p.h + 15}" text-anchor="middle" '
                       f'font-size="10">{escape(group)}</text>')
        for s, vs in enumerate(series.values()):
            v = vs[g] if g < len(vs) else float("nan")
            if not math.isfinite(v):
                continue
            x = p.left + gw * g + gw * 0.1 + bw * s
            y = p.sy(v)
            p.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{p.top + p.h - y:.1f}" '
                           f'fill="{COLORS[s % len(COLORS)]}"/>')
    p.legend(list(series), bottom=False)
    return p


def cdf_and_bars(samples: Mapping[str, Sequence[float]], groups: Sequence[str],
                 series: Mapping[str, Sequence[float]], cdf_title: str, xlabel: str,
                 bar_title: str, ylabel: str) -> str:
    """One SVG: a CDF panel on the left and a grouped-bar panel on the right."""
    return _figure([cdf_panel(0, 0, samples, cdf_title, xlabel),
                    bar_panel(PANEL_W, 0, groups, series, bar_title, ylabel)], columns=2)
