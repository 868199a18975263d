"""robustres search's output: its decisions as they are made (lines, or a table per depth and rung
on a terminal), its plan (--dry-run) and its answer."""

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .render import axis_value, duration, flop_text, json_value, pct, print_report, short_list, wall_time_text


def _p(d: dict) -> str:
    return "" if d.get("p") is None else f", one-sided p={d['p']:.3f}"


def decision_text(d: dict) -> str:
    """One decision of a search, with its evidence."""
    h, action, why = f"h={d['h']:g}", d["action"], d["why"]
    if action in ("add", "skip"):
        return f"{h} {'added' if action == 'add' else 'not added'}: {why}"
    if action == "pause":
        evidence = f" (median {pct(d['median'])} % vs {pct(d['leader_median'])} % of h={d['leader']:g}{_p(d)})" \
            if d.get("leader") is not None and d.get("median") is not None and d["leader"] != d["h"] else ""
        return f"{h} paused (stopped): {why}{evidence}"
    if action == "more":
        kept = decision_text({**d, "action": "keep", "why": d["why_kept"]}).split(": ", 1)[1]
        return (f"{h} reached the end on {d['seeds']} seeds: {kept}; its other seeds train to the end before it is "
                f"judged there")
    if action == "end":
        return f"{h} finished: " + decision_text({**d, "action": "keep" if why != "diverged" else "cut"}).split(
            ": ", 1)[1] + ("" if why in ("leader", "not shown worse") else " (report judges the finished runs)")
    seeds = f"{d['seeds']} seed{'s' if d['seeds'] != 1 else ''}"
    if why == "diverged":
        return f"{h} cut: diverged ({d['diverged']}/{d['seeds']} seeds)"
    versus = f"median {pct(d['median'])} % vs {pct(d['leader_median'])} % of h={d['leader']:g}"
    margin = f"margin {100 * d['margin']:g} point(s)"
    if why == "leader":
        return f"{h} kept: the rung's leader (median {pct(d['median'])} %, {seeds})"
    if why == "worse":
        return f"{h} cut: worse than h={d['leader']:g} by more than the {margin} ({versus}{_p(d)}, {seeds})"
    if why == "minimum kept":
        return f"{h} kept: worse ({versus}{_p(d)}), but the least-bad of the cut, to keep the minimum alive"
    return f"{h} kept: not shown worse ({versus}{_p(d)}, {margin}, {seeds})"


def _where(d: dict) -> str:
    noise = f", training noise {d['train_noise']:g}" if d.get("train_noise") else ""
    axes = "".join(f", {name} {axis_value(value)}" for name, value in (d.get("axes") or {}).items())
    start = {"band": "transfer band", "widen": "transfer widen", "coarse": "start"}.get(d.get("origin"), "refine")
    return f"depth {d['depth']}{noise}{axes}, " + (start if d["epoch"] == 0 else f"rung epoch {d['epoch']}")


def print_decision_lines(decisions: list[dict], stream) -> None:
    for d in decisions:
        print(f"{_where(d)}: {decision_text(d)}", file=stream, flush=True)


def print_rung_tables(out: Console, decisions: list[dict]) -> None:
    """A round's decisions on a terminal: one small table per depth and rung."""
    groups: dict[str, list[dict]] = {}
    for d in decisions:
        groups.setdefault(_where(d), []).append(d)
    for where, ds in groups.items():
        table = Table(title=where, title_justify="left")
        for col in ("h", "median %", "decision", "evidence"):
            table.add_column(col, justify="left" if col in ("decision", "evidence") else "right")
        for d in sorted(ds, key=lambda d: d["h"]):
            text = decision_text(d).split(": ", 1)
            style = "red" if d["action"] in ("cut", "pause") else "bold" if d.get("why") == "leader" else None
            table.add_row(f"{d['h']:g}", pct(d.get("median")), text[0].split(" ", 1)[1], text[1], style=style)
        out.print(table)


def search_json(result) -> dict:
    """search --json: report's recommendation objects, the cost and every decision (docs/json.md)."""
    return {"search_id": result.search_id,
            "recommendations": [{k: json_value(v) for k, v in r.items()} for r in result.recommendations],
            "model_epochs": result.model_epochs, "grid_model_epochs": result.grid_model_epochs,
            "budget_model_epochs": result.budget_model_epochs, "cost": result.cost,
            "decisions": [{k: json_value(v) for k, v in d.items()} for d in result.decisions],
            "warnings": result.warnings}


def print_search(out: Console, result, store: Path) -> None:
    """The answer as report gives it (stopped runs labelled as such), then the cost."""
    print_report(result.groups, result.recommendations, [])
    share = result.model_epochs / result.grid_model_epochs
    flops = result.cost["flops"]
    out.print(f"robustres search {result.search_id}: {result.model_epochs:,} model-epochs of the full grid's "
              f"{result.grid_model_epochs:,} ({100 * share:.0f} %; budget {result.budget_model_epochs:,}), "
              f"{flops['spent']:.3g} training FLOPs of its {flops['grid']:.3g} "
              f"({100 * flops['spent'] / flops['grid']:.0f} %; budget {flops['budget']:.3g}), "
              f"{len(result.decisions)} decisions; store {store} (robustres report reads it)")


def _range(low, high, text=str) -> str:
    return text(low) if low == high else f"{text(low)} to {text(high)}"


def _whole(x) -> str:
    return f"{x:,}"


def _share(cost: dict) -> str:
    return _range(round(100 * cost["low"] / cost["grid"]), round(100 * cost["high"] / cost["grid"]))


def print_search_plan(plan: dict) -> None:
    """search --dry-run: per depth its start, rungs and projected cost; the total and the time."""
    out = Console()
    table = Table(title=f"robustres search --dry-run{' --transfer' if plan['transfer'] else ''}: "
                        f"{len(plan['depths'])} depth(s), nothing trained")
    for col in ("depth", "start", "h", "rungs", "model-epochs", "% of grid", "FLOPs"):
        table.add_column(col, justify="left" if col in ("start", "h", "rungs") else "right")
    for r in plan["depths"]:
        me, fl = r["model_epochs"], r["flops"]
        where = "".join(f", {k} {axis_value(v)}" for k, v in (r.get("axes") or {}).items())
        noise = f", noise {r['train_noise']:g}" if r["train_noise"] else ""
        table.add_row(f"{r['depth']}{noise}{where}", r["start"], short_list(r["h"]) if r["h"] else "predicted",
                      ",".join(map(str, r["rungs"])), _range(me["low"], me["high"], _whole),
                      _share(me) + " %", _range(fl["low"], fl["high"], flop_text))
    out.print(table)
    out.print("start: coarse, every --stride-th h of the grid; band, the h the shallower depths predict (--transfer), "
              "its model-epochs the least a band needs", soft_wrap=True)
    me, fl = plan["model_epochs"], plan["flops"]
    unit = "FLOPs" if plan["budget_unit"] == "flop" else "model-epochs"
    out.print(f"projected: {_range(me['low'], me['high'], _whole)} model-epochs of the grid's {me['grid']:,} "
              f"({_share(me)} %), {_range(fl['low'], fl['high'], flop_text)} of {flop_text(fl['grid'])} "
              f"({_share(fl)} %); budget {plan['budget']:,} {unit}", soft_wrap=True)
    wall = plan["wall_time"]
    if wall["seconds"] is not None:
        out.print(f"projected wall time {duration(wall['seconds'][0])} to {duration(wall['seconds'][1])}, against the "
                  f"grid's {wall_time_text(wall['grid']).removeprefix('estimated wall time ')}", soft_wrap=True)
    else:
        out.print(wall_time_text(wall["grid"]), soft_wrap=True)
    for warning in wall["warnings"]:
        out.print(f"warning: {warning}", soft_wrap=True)
