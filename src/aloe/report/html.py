"""Small HTML and inline-SVG builders. Every piece of text goes through `esc`; callers pass
`Markup` only for HTML they built here, so run data can never inject markup into the page."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field


class Markup(str):
    """HTML that is already safe (built by these helpers); plain `str` is always escaped,
    also when added to Markup."""

    def __add__(self, other: object) -> Markup:
        return Markup(str.__add__(self, esc(other)))

    def __radd__(self, other: object) -> Markup:
        return Markup(str.__add__(esc(other), self))


def esc(x: object) -> Markup:
    return x if isinstance(x, Markup) else Markup(html.escape("" if x is None else str(x), quote=True))


def tag(name: str, body: object = "", **attrs: object) -> Markup:
    """`<name attrs>body</name>`; `cls` sets class, `data_x` sets data-x; None attributes are left out."""
    parts = [name] + [f'{k.rstrip("_").replace("cls", "class").replace("_", "-")}="{esc(v)}"'
                      for k, v in attrs.items() if v is not None]
    return Markup(f"<{' '.join(parts)}>{esc(body)}</{name}>")


def join(parts: Sequence[object], sep: str = "") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


def is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def pct(x: object) -> str:
    return f"{100 * x:.1f}" if is_num(x) else "—"  # type: ignore[operator]


def ci(c: object) -> str:
    if isinstance(c, (list, tuple)) and len(c) == 2 and is_num(c[0]) and is_num(c[1]):
        return f"{pct(c[0])}–{pct(c[1])}"
    return "—"


def pts_ci(c: object) -> str:
    """An interval of a difference: signed ends joined by "to", never a dash next to a minus."""
    if isinstance(c, (list, tuple)) and len(c) == 2 and is_num(c[0]) and is_num(c[1]):
        return f"{pts(c[0])} to {pts(c[1])}"
    return "—"


def pts(d: object) -> str:
    """A difference of two proportions, in percentage points."""
    return f"{100 * d:+.1f}" if is_num(d) else "—"  # type: ignore[operator]


def num(x: object, digits: int = 3) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:.{digits}f}" if is_num(x) else "—"


@dataclass(frozen=True)
class Cell:
    """A table cell with a machine-readable key (data-key), so tests and scripts can find it."""

    body: object
    key: str | None = None
    cls: str | None = None


def table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str | None = None) -> Markup:
    def td(c: object) -> Markup:
        return tag("td", c.body, data_key=c.key, cls=c.cls) if isinstance(c, Cell) else tag("td", c)

    thead = tag("thead", tag("tr", join([tag("th", h) for h in head])))
    tbody = tag("tbody", join([tag("tr", join([td(c) for c in r])) for r in rows]))
    return tag("table", thead + tbody, cls=cls)


def link(href: str, text: object | None = None) -> Markup:
    return tag("a", href if text is None else text, href=href)


def not_run(what: str) -> Markup:
    return tag("p", f"not run ({what})", cls="not-run")


PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


@dataclass
class Series:
    name: str
    values: list[float | None]
    cis: list[Sequence[float] | None] = field(default_factory=list)


def _svg(width: int, height: int, body: str, label: str) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">{body}</svg>')


def hbar_chart(items: Sequence[tuple[str, float, str]], label: str, unit: str = "s") -> Markup:
    """Horizontal bars: (name, value, css class) each; the class colours the bar (e.g. a status)."""
    if not items:
        return Markup("")
    left, bar_h, width = 130, 18, 640
    vmax = max((v for _, v, _ in items), default=0) or 1.0
    out = []
    for i, (name, v, klass) in enumerate(items):
        y = 6 + i * (bar_h + 6)
        w = max(0.0, v) / vmax * (width - left - 80)
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{esc(name)}</text>'
                   f'<rect class="bar {esc(klass)}" fill="{PALETTE[0]}" data-value="{v:.2f}" x="{left}" y="{y}" '
                   f'width="{w:.1f}" height="{bar_h}"><title>{esc(name)}: {v:.1f} {unit}</title></rect>'
                   f'<text x="{left + w + 4:.1f}" y="{y + 13}">{v:.1f} {unit}</text>')
    return _svg(width, 12 + len(items) * (bar_h + 6), "".join(out), label)


def grouped_bars(groups: Sequence[str], series: Sequence[Series], label: str,
                 group_classes: Sequence[str | None] = ()) -> Markup:
    """Vertical bars of proportions (0-100 %) per group, one colour per series, CI whiskers;
    `group_classes` styles group labels (e.g. unseen attack styles)."""
    if not groups or not series:
        return Markup("")
    top, plot_h, left, bar_w = 24, 220, 40, 16
    group_w = bar_w * len(series) + 20
    longest = max(len(g) for g in groups)
    rot = longest * 6.5 > group_w  # labels wider than their group are turned to stay legible
    width = left + group_w * len(groups) + (int(longest * 5.5) if rot else 10)
    height = top + plot_h + (16 + int(4.5 * longest) if rot else 24) + 18 * len(series)
    y0 = top + plot_h
    out = [f'<line x1="{left}" y1="{y0}" x2="{width - 5}" y2="{y0}" stroke="#888"/>']
    for t in (0, 25, 50, 75, 100):
        y = y0 - plot_h * t / 100
        out.append(f'<text x="{left - 4}" y="{y + 4:.0f}" text-anchor="end" class="tick">{t}</text>'
                   f'<line x1="{left}" y1="{y:.0f}" x2="{width - 5}" y2="{y:.0f}" stroke="#eee"/>')
    for gi, g in enumerate(groups):
        gx = left + gi * group_w + 7
        for si, s in enumerate(series):
            v = s.values[gi] if gi < len(s.values) else None
            if v is None or not is_num(v):
                continue
            x, h = gx + si * bar_w, plot_h * max(0.0, min(1.0, v))
            color = PALETTE[si % len(PALETTE)]
            out.append(f'<rect class="bar" data-series="{esc(s.name)}" data-group="{esc(g)}" data-value="{v:.4f}" '
                       f'x="{x}" y="{y0 - h:.1f}" width="{bar_w - 2}" height="{h:.1f}" fill="{color}">'
                       f'<title>{esc(s.name)} · {esc(g)}: {pct(v)} %</title></rect>')
            c = s.cis[gi] if gi < len(s.cis) else None
            if c and all(is_num(b) for b in c):
                ya, yb = y0 - plot_h * c[0], y0 - plot_h * c[1]
                cx = x + (bar_w - 2) / 2
                out.append(f'<line class="whisker" x1="{cx}" x2="{cx}" y1="{ya:.1f}" y2="{yb:.1f}" stroke="#333"/>')
        klass = group_classes[gi] if gi < len(group_classes) and group_classes[gi] else "group"
        lx, ly = gx + group_w / 2 - 7, y0 + 14
        transform = f' transform="rotate(35 {lx:.0f} {ly})"' if rot else ' text-anchor="middle"'
        out.append(f'<text class="{esc(klass)}" x="{lx:.0f}" y="{ly}"{transform}>{esc(g)}</text>')
    for si, s in enumerate(series):
        y = height - 18 * (len(series) - si) + 10
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
                   f'<text x="{left + 14}" y="{y}">{esc(s.name)}</text>')
    return _svg(width, height, "".join(out), label)
