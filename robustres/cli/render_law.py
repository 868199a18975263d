"""report's h-rule and depth-law output (law.py): the rules side by side as a table showing c and
the effective h, the transfer verdicts, the fitted laws, one line per prediction; and their JSON."""

from __future__ import annotations

from rich.table import Table

from ..stats import level_label
from .render import console, interval, json_value, pct


def law_json(result) -> dict:
    """report JSON's `rules`, `law` and `predictions` (docs/json.md)."""
    return {"rules": [json_value(r) for r in result.rules], "law": [json_value(x) for x in result.laws],
            "predictions": [json_value(p) for p in result.predictions]}


def print_law(result) -> None:
    from .. import law  # pandas: imported when a report prints, never for --help or bad input

    out = console()
    level = float(result.groups.level.iloc[0]) if len(result.groups) else 0.95
    for entry in result.rules:
        if entry["side_by_side"]:
            table = Table(title=f"h rules side by side: {entry['dataset']}",
                          caption=f"each rule's best over its grid; c: the grid's value, h: what the blocks start "
                                  f"with (L: residual blocks); CI {level_label(level)} %")
            for col in ("depth", "L", "rule", "c", "h", "median %", f"{level_label(level)} % CI", "seeds"):
                table.add_column(col, justify="left" if col == "rule" else "right")
            for side in entry["side_by_side"]:
                table.add_section()
                for r in side["rules"]:
                    table.add_row(str(side["depth"]), str(r["blocks"]), r["rule"], f"{r['c']:g}", f"{r['h']:.4g}",
                                  pct(r["median"]), interval(*r["ci"]), str(r["seeds"]),
                                  style="bold" if r["rule"] == side["winner"] else None)
            out.print(table)
            for side in entry["side_by_side"]:
                out.print(side["text"])
        for t in entry["transfer"]:
            out.print(f"transfer, {entry['dataset']}: {t['text']}")
    for entry in result.laws:
        for line in law.law_text(entry, level):
            out.print(line)
    for p in result.predictions:
        out.print(law.prediction_text(p))
