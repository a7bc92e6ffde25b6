"""Pictures of a ``mailslot spike`` run: a PNG (matplotlib, Agg) and a self-contained HTML page (inline SVG,
no script, no CDN), both with four panels over time: publish rate, deliver rate, queue depth, broker RSS."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .pacing import rate_series

MB = 1024 * 1024


def panels(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The four panels as plain data: title, unit, and named lines of (t, value) points."""
    s = result["series"]
    t = [x["t"] for x in s]

    def rate(key: str) -> list[float]:
        return rate_series(t, [x[key] for x in s])

    def pts(values: Sequence[float | int | None], scale: float = 1.0) -> list[tuple[float, float]]:
        return [(ti, v / scale) for ti, v in zip(t, values, strict=True) if v is not None]

    requested = [result["config"]["rate"] if x["phase"] == "spike" else None for x in s]
    pub_lines = [("published", pts(rate("published"))), ("confirmed", pts(rate("confirmed")))]
    if any(x["rejected"] for x in s):
        pub_lines.append(("rejected", pts(rate("rejected"))))
    pub_lines.append(("requested", pts(requested)))
    return [
        {"title": "publish rate", "unit": "msg/s", "lines": pub_lines},
        {"title": "deliver rate (processed by workers)", "unit": "msg/s",
         "lines": [("delivered", pts(rate("delivered")))]},
        {"title": "queue depth", "unit": "messages", "lines": [("depth", pts([x["depth"] for x in s]))]},
        {"title": "broker RSS", "unit": "MB", "lines": [("rss", pts([x["rss"] for x in s], MB))]},
    ]


COLORS = {"published": "#1f77b4", "confirmed": "#2ca02c", "rejected": "#d62728", "requested": "#7f7f7f",
          "delivered": "#ff7f0e", "depth": "#9467bd", "rss": "#8c564b"}


def title_line(result: dict[str, Any]) -> str:
    r = result["report"]
    c = result["config"]
    return (f"spike {c['rate']:,.0f} msg/s x {c['duration']:g} s, workers {c['worker_rate']:,.0f} msg/s"
            f"{', max-length ' + format(c['max_length'], ',') if c['max_length'] else ''}: "
            f"reached {r['reached_publish_rate']:,.0f} msg/s, lost {r['lost'] if r['lost'] is not None else '?'}")


def write_png(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    spike_end = result["spike_end_t"]
    drained = result.get("drained_t")
    for ax, panel in zip(axes, panels(result), strict=True):
        for name, points in panel["lines"]:
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = {"linestyle": "--", "linewidth": 1} if name == "requested" else {"linewidth": 1.5}
            ax.plot(xs, ys, label=name, color=COLORS.get(name), **style)
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_ylabel(panel["unit"])
        ax.set_ylim(bottom=0)
        ax.axvline(spike_end, color="#444", linewidth=0.8, linestyle=":")
        if drained is not None:
            ax.axvline(drained, color="#2ca02c", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
        if len(panel["lines"]) > 1:
            ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("seconds (dotted: end of spike, queue drained)")
    fig.suptitle(title_line(result), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- HTML
def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math

    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _svg_panel(panel: dict[str, Any], t_max: float, spike_end: float, drained: float | None,
               w: int = 820, h: int = 170) -> str:
    left, right, top, bottom = 70, 10, 22, 24
    pw, ph = w - left - right, h - top - bottom
    values = [v for _, pts in panel["lines"] for _, v in pts]
    y_max = _nice_max(max(values, default=0.0))
    t_max = t_max or 1.0

    def x(t: float) -> float:
        return left + pw * t / t_max

    def y(v: float) -> float:
        return top + ph * (1 - v / y_max)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
            f'font-size="11">'),
           f'<text x="{left}" y="14" font-weight="bold">{html.escape(panel["title"])} ({panel["unit"]})</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>']
    for i in range(5):
        v = y_max * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.6g}</text>')
    for i in range(6):
        t = t_max * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{h - 8}" text-anchor="middle">{t:.0f}s</text>')
    for mark, color in ((spike_end, "#444"), (drained, "#2ca02c")):
        if mark is not None:
            out.append(f'<line x1="{x(mark):.1f}" x2="{x(mark):.1f}" y1="{top}" y2="{top + ph}" stroke="{color}" '
                       f'stroke-dasharray="3,3"/>')
    lx = left + pw - 5
    for name, pts in reversed(panel["lines"]):
        if not pts:
            continue
        color = COLORS.get(name, "#000")
        dash = ' stroke-dasharray="6,4"' if name == "requested" else ""
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{coords}">'
                   f'<title>{html.escape(name)}</title></polyline>')
        if len(panel["lines"]) > 1:
            out.append(f'<text x="{lx}" y="{top + 12}" text-anchor="end" fill="{color}">{html.escape(name)}</text>')
            lx -= 8 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out)


def write_html(result: dict[str, Any], path: Path) -> Path:
    t_max = max((x["t"] for x in result["series"]), default=1.0)
    svgs = "\n".join(_svg_panel(p, t_max, result["spike_end_t"], result.get("drained_t")) for p in panels(result))
    rows = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                     for k, v in result["report"].items())
    data = json.dumps(result).replace("</", "<\\/")  # safe inside <script>
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailslot spike</title>
<style>body{{font-family:sans-serif;margin:20px;color:#222}} td{{padding:2px 10px}} tr:nth-child(odd){{background:#f4f4f4}}
svg{{display:block;margin:6px 0}}</style></head><body>
<h2>mailslot spike</h2>
<p>{html.escape(title_line(result))}</p>
<p>Grey dotted line: end of the spike; green dotted line: queue drained.</p>
{svgs}
<h3>report</h3>
<table>{rows}</table>
<script type="application/json" id="spike-data">{data}</script>
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".")
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)
