"""`robustres search --dry-run`: the search's plan and its projected cost, trained and written
nothing. Per depth: where it starts (the coarse grid, or a band the shallower depths will predict),
its rungs and the budget it may spend. The projection is a range, since what a search spends
depends on what it finds:

- a depth searched whole spends up to its budget share and, the budget binding as it does on every
  benchmark problem (benchmarks/RESULTS.md, "Search"), about all of it: high and low alike;
- a depth started from a band (--transfer) spends at least its band's least (halving.band_least)
  and at most what the pool leaves it, when the shallower depths' savings go to widening.

Time: the sweep dry run's estimate for the grid (execution/dryrun.py, the engine's measured rates)
scaled per depth by the FLOPs projected against the grid's.
"""

from __future__ import annotations

from .execution.dryrun import dry_run
from .halving import SearchOptions
from .search import make_blocks
from .spec import Execution, RunSpec


def plan(runs: list[RunSpec], options: SearchOptions, execution: Execution) -> dict:
    blocks, grid_epochs, budget = make_blocks(runs, options)
    rows = []
    for b in blocks:
        grid = b.grid_epochs()
        if b.waiting:  # its least; at most that and what the pool keeps for widening
            low = b.budget // b.unit_cost
            high = (b.pool - sum(o.budget for o in blocks if o.family == b.family and o is not b)) // b.unit_cost
        else:
            low = high = b.budget // b.unit_cost
        rows.append({**b.tag(), "start": "band" if b.waiting else "coarse",
                     "h": sorted(b.candidates) if not b.waiting else [], "grid_h": len(b.runs), "rungs": list(b.rungs),
                     "model_epochs": {"low": min(low, grid), "high": min(high, grid), "grid": grid},
                     "flops": {"low": min(low, grid) * b.epoch_flops, "high": min(high, grid) * b.epoch_flops,
                               "grid": grid * b.epoch_flops}})
    total = {unit: {k: sum(r[unit][k] for r in rows) for k in ("low", "high", "grid")}
             for unit in ("model_epochs", "flops")}
    # What the pools keep for widening goes to one depth or another, not to all: the total is capped
    # by the budget (in its own unit; the other unit's high stays the sum, an upper bound).
    unit = "flops" if options.budget_unit == "flop" else "model_epochs"
    total[unit]["high"] = min(total[unit]["high"], budget)
    return {"transfer": options.transfer, "options": options.to_dict(), "budget": budget,
            "budget_unit": "flop" if options.budget_unit == "flop" else "model_epochs", "depths": rows, **total,
            "wall_time": _wall_time(runs, execution, rows)}


def _wall_time(runs: list[RunSpec], execution: Execution, rows: list[dict]) -> dict:
    """The grid's estimated seconds (low, high), each pack's scaled by its depth's projected share."""
    grid = dry_run(runs, execution)
    share = {}
    for r in rows:
        share.setdefault(r["depth"], []).append((r["flops"]["low"] / max(r["flops"]["grid"], 1),
                                                 r["flops"]["high"] / max(r["flops"]["grid"], 1)))
    low = high = 0.0
    known = 0
    for p in grid["packs"]:
        seconds = p["estimate"]["seconds"]
        if seconds is None:
            continue
        known += 1
        shares = share.get(p["depth"], [(1.0, 1.0)])
        low += seconds[0] * min(s[0] for s in shares)
        high += seconds[1] * max(s[1] for s in shares)
    return {"grid": grid["wall_time"], "seconds": [low, high] if known else None, "packs": len(grid["packs"]),
            "estimated": known, "warnings": grid["warnings"]}
