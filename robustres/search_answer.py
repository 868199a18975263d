"""A search's answer and its cost: report's recommendation over the search's runs as the search
left them, and what it spent against the grid and the budget, in model-epochs and FLOPs. Functions
of its blocks (search.Block: their runs, rows and candidates), read only."""

from __future__ import annotations

import pandas as pd

from . import halving as H
from .store import Store


def cost_of(blocks: list, options: H.SearchOptions, budget: int) -> dict:
    """Spent, the grid's and the budget, in model-epochs and in training FLOPs, per block and in all.
    A block's budget in the other unit is what it pays for: a FLOP budget's share in whole model-epochs."""
    flop = options.budget_unit == H.FLOP
    per_block = []
    for b in blocks:
        epochs = b.budget // b.unit_cost
        per_block.append({**b.tag(), "flops_per_model_epoch": b.epoch_flops,
                          "model_epochs": {"spent": b.spent(), "grid": b.grid_epochs(), "budget": epochs},
                          "flops": {"spent": b.spent() * b.epoch_flops, "grid": b.grid_epochs() * b.epoch_flops,
                                    "budget": b.budget if flop else b.budget * b.epoch_flops}})
    total = {u: {k: sum(p[u][k] for p in per_block) for k in ("spent", "grid", "budget")}
             for u in ("model_epochs", "flops")}
    total["flops" if flop else "model_epochs"]["budget"] = budget  # the budget as given (a share's rounding)
    return {"unit": H.FLOP if flop else H.MODEL_EPOCHS, **total, "per_block": per_block}


def answer(blocks: list, store: Store) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """report's recommendation over the search's runs as the search left them: the runs of a cut or
    paused h count as stopped even if another command (a sweep) has finished them since, so the
    answer is a function of the search's decisions (report over the store counts them finished)."""
    from . import report as R

    ids, left = set(), {}
    for block in blocks:
        for (h, _), row in block.rows.items():
            ids.add(row["run_id"])
            c = block.candidates[h]
            seen_diverged = row["status"] == "diverged" and int(row["diverged_epoch"]) <= c.epoch
            if c.state in ("cut", "paused") and not seen_diverged:
                left[row["run_id"]] = row["status"]
    table = R.select(store.runs(columns=R.RUN_COLUMNS), R.Filters())
    table = table[table.run_id.isin(ids)].copy()
    mine = table.run_id.isin(left)
    # Finished past the search's rung: by another command, or before, by a killed run of this search
    # with other options (its rows are the same bits; only the decisions differ).
    moved = int((mine & table.status.isin(["completed", "diverged"])).sum())
    table.loc[mine, "status"] = "stopped"
    groups, recs, warnings = R.recommend(R.aggregate(table), table, R.MIN_SEEDS)
    if moved:
        warnings.append(f"{moved} run(s) of the h this search cut or paused were trained to the end (by another "
                        "command, or by an earlier run of a search with other options): counted here as stopped "
                        "at the search's rung; robustres report counts them as they are now")
    return groups, recs, warnings
