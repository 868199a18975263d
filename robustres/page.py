"""`report --html FILE`: the report as one self-contained page.

Everything is inline: the figures as SVG, the styles in a <style> block, no script and no network
reference (the only URLs are the SVG namespace names). It holds the stable region when an ordered
axis such as lr varies (per depth the verdict on "the edge grows as h shrinks" and the heatmap of h
against the axis), per block the recommendation (the point, the set, the reason), the table with
intervals and divergence rates, and the figures report draws: Fig. 6 (accuracy against h with
interval bands; side by side per value of a categorical axis), Fig. 3 when there are several
depths, and the learning curves. Sized for a laptop screen: one column, at most 1100 px wide.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_atomic
from .figures import heatmap_stem
from .law import law_text, prediction_text
from .region import axes_text

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; }
.answer { background: #eef5ee; border-left: 4px solid #2e7d32; padding: 10px 14px; margin: 10px 0; }
.answer b { font-size: 17px; } .warning { background: #fff4e5; border-left: 4px solid #ef6c00; padding: 8px 14px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; } th { background: #f4f4f6; }
td.label { text-align: left; } tr.best td { font-weight: 600; background: #eef5ee; }
figure { margin: 12px 0; } figure svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: 13px; }
"""


# The figures a page holds, in this order (the per-depth feature plots and instruments stay files).
PAGE_FIGURES = ("fig6-", "fig3-", "fig5-", "curves-")
TRANSFER = "transfer-"  # accuracy against c per rule: in the depth-law section


@dataclass(frozen=True)
class Law:
    """law.analyse's results for the page: the rules, the laws, the predictions."""

    rules: list = field(default_factory=list)
    laws: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    level: float = 0.95


def _depth_law(law: Law | None, figures: list[Path]) -> list[str]:
    """The h rules side by side, their transfer (with the accuracy-against-c figure), the law of
    depth and the predictions; nothing when report found a single depth and rule."""
    if law is None or not (law.rules or law.predictions):
        return []
    parts = ["<h2>h as a law of depth</h2>", "<p class=\"note\">c is the grid's value; a block's h is c (fixed), "
             "c / sqrt(L) (sqrt) or c / L (linear), L its residual blocks. A rule transfers when one c lies in every "
             "depth's indistinguishable set.</p>"]
    for entry in law.rules:
        lines = [s["text"] for s in entry["side_by_side"]] + [t["text"] for t in entry["transfer"]]
        parts += [f"<p class=\"answer\">{html.escape(line)}</p>" for line in lines]
    for entry in law.laws:
        parts += [f"<p class=\"answer\">{html.escape(line)}</p>" for line in law_text(entry, law.level)]
    parts += [f"<p class=\"answer\">{html.escape(prediction_text(p))}</p>" for p in law.predictions]
    parts += [f"<figure>{_svg(Path(p))}<figcaption class=\"note\">{html.escape(Path(p).stem)}</figcaption></figure>"
              for p in figures if Path(p).suffix == ".svg" and Path(p).stem.startswith(TRANSFER)]
    return parts


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _table(rows) -> str:
    head = ("<tr><th>h</th><th>runs</th><th>done</th><th>diverged</th><th>failed</th><th>median %</th>"
            "<th>CI %</th><th>IQM %</th><th>divergence rate % (CI)</th><th>label</th></tr>")
    body = []
    for r in rows.sort_values("h").itertuples():
        rate = "-" if math.isnan(r.diverged_rate) else \
            f"{100 * r.diverged_rate:.0f} ({100 * r.diverged_low:.0f}-{100 * r.diverged_high:.0f})"
        ci = "-" if _pct(r.ci_low) == "-" else f"{_pct(r.ci_low)}-{_pct(r.ci_high)}"
        body.append(f"<tr class=\"{'best' if r.label == 'best' else ''}\"><td>{r.h:g}</td><td>{r.runs}</td>"
                    f"<td>{r.completed}</td><td>{r.diverged}</td><td>{r.failed}</td><td>{_pct(r.median)}</td>"
                    f"<td>{ci}</td><td>{_pct(r.iqm)}</td><td>{rate}</td>"
                    f"<td class=\"label\">{html.escape(r.label)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _svg(path: Path) -> str:
    """An SVG file's markup, inline (its XML prologue and DOCTYPE dropped)."""
    text = path.read_text(encoding="utf-8")
    return text[text.index("<svg"):] if "<svg" in text else ""


def _region(verdicts: list[dict], figures: list[Path]) -> list[str]:
    """The stable region per depth: the verdict's sentence, then the heatmap of h against the axis."""
    if not verdicts:
        return []
    svgs = {Path(p).stem: Path(p) for p in figures if Path(p).suffix == ".svg"}
    parts = ["<h2>Stable region</h2>", "<p class=\"note\">Per depth and h, the edge: the largest value of the "
             "axis below the first at which a run diverged. Does the edge grow as h shrinks? Yes or no only "
             "where the divergence rates of neighbouring h (Wilson intervals) are told apart.</p>"]
    for v in verdicts:
        parts.append(f"<p class=\"answer\">{html.escape(v['text'])}</p>")
        stem = heatmap_stem(v["axis"], v["dataset"], v["train_noise"], v["axes"], v["depth"])
        if stem in svgs:
            parts.append(f"<figure>{_svg(svgs[stem])}<figcaption class=\"note\">{html.escape(stem)}</figcaption>"
                         "</figure>")
    return parts


def render(groups, recommendations: list[dict], warnings: list[str], figures: list[Path], title: str,
           verdicts: list[dict] | None = None, depth_law: Law | None = None) -> str:
    """The page's HTML; `verdicts` (region.verdicts) open it with the stable region and its heatmaps,
    `depth_law` (law.py) adds the rules, their transfer, the law and its predictions."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<p class=\"note\">The answer per depth is the set of h the evidence cannot tell from the best "
             "(intervals over seeds with the test set's binomial noise) and one point in it: the smallest h of "
             "the set whose interval holds the best's median.</p>"]
    parts += [f"<p class=\"warning\">warning: {html.escape(w)}</p>" for w in warnings]
    parts += _region(verdicts or [], figures)
    parts += _depth_law(depth_law, figures)
    by_block = {(r["dataset"], r["protocol"], r["depth"], r["train_noise"]): r for r in recommendations}
    for block, rows in groups.groupby(["dataset", "protocol", "depth", "train_noise"], sort=False):
        dataset, protocol, depth, noise = block
        rec = by_block.get(block, {})
        axes = rows["axes"].iloc[0] if "axes" in rows else {}
        name = f"{dataset}, depth {depth}" + (f", training noise {noise:g}" if noise else "") + \
            (f", {axes_text(axes)}" if axes else "")
        answer = "no h qualifies" if rec.get("h") is None else \
            f"h = {rec['h']:g}; indistinguishable: {{{', '.join(f'{h:g}' for h in rec['indistinguishable'])}}}"
        parts += [f"<h2>{html.escape(name)}</h2>",
                  f"<div class=\"answer\"><b>Recommended: {html.escape(answer)}</b><br>"
                  f"{html.escape(rec.get('reason', ''))}</div>", _table(rows)]
    metric = str(groups.metric.iloc[0]) if len(groups) else "final"
    parts.append(f"<p class=\"note\">metric: {metric}; intervals at {int(round(100 * groups.level.iloc[0]))} %."
                 "</p>" if len(groups) else "")
    svgs = sorted((p for p in figures if Path(p).suffix == ".svg" and Path(p).stem.startswith(PAGE_FIGURES)),
                  key=lambda p: PAGE_FIGURES.index(next(f for f in PAGE_FIGURES if Path(p).stem.startswith(f))))
    if svgs:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure>{_svg(Path(p))}<figcaption class=\"note\">{html.escape(Path(p).stem)}</figcaption>"
                  "</figure>" for p in svgs]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def write_page(path: Path, text: str) -> None:
    """Write the page atomically (a reader never sees half a page)."""
    if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text):
        raise ValueError("the page would reference the network")  # never: everything is inline
    write_atomic(Path(path), lambda f: f.write(text.encode("utf-8")))
