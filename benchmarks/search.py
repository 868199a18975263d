"""`robustres search` against its full grid, with the same seeds (issue 16).

For each problem: train the full grid in one store and the search in another (same run ids, so
the same trajectories), then ask per depth whether the search's h lies in the grid's
indistinguishable set, and what fraction of the grid's model-epochs the search spent. Then the
late bloomers: replay the rung rule on the grid's stored epochs and count how often the grid's
best h would have been cut at some rung, for several margins.

    .venv/bin/python -m benchmarks.search --data /work/data/cifar10-jpeg [--only moons] [--out DIR]

Results: a markdown table on stdout and benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from robustres import grid
from robustres import halving as H
from robustres import report as R
from robustres import search as S
from robustres.execution.runner import Silent
from robustres.execution.train import train_runs
from robustres.spec import make_execution
from robustres.store import Store

MOONS = {"dataset": "two-moons", "depths": [4, 10, 30], "h": "0.01..2", "seeds": 5}
# Real CIFAR-10 images, cut to 1,000 training / 500 test images, a short schedule with one lr drop.
CIFAR = {"dataset": "imagefolder", "depths": [8, 14, 20], "h": "0.01..5", "seeds": 5, "epochs": 6,
         "milestones": [4], "limit_train": 1000, "limit_test": 500}
PROBLEMS = {
    "moons": MOONS,
    "moons-noise": {**MOONS, "train_noise": [0.2]},
    "cifar": CIFAR,
}
MARGINS = (0.0, 0.01, 0.02, 0.05)


def train(specs, execution):
    return train_runs(specs, execution, Silent())


def grid_answer(runs, execution) -> tuple[dict, list[dict], float]:
    started = time.perf_counter()
    rows = train(runs, execution)
    seconds = time.perf_counter() - started
    table = R.select(Store(execution.store).runs(columns=R.RUN_COLUMNS), R.Filters())
    table = table[table.run_id.isin({r["run_id"] for r in rows})]
    _, recs, _ = R.recommend(R.aggregate(table), table, R.MIN_SEEDS)
    return {(r["depth"], r["train_noise"]): r for r in recs}, rows, seconds


def late_bloomers(runs, rows: list[dict], options: H.SearchOptions, store: Store) -> dict:
    """Per margin: in how many blocks would a rung have cut the grid's best h (the highest final
    median with no divergence), judged against every grid h at that rung."""
    blocks, _, _ = S.make_blocks(runs, replace(options, budget=1.0, stride=1))
    by_run = {(spec.depth, spec.train_noise, spec.h, spec.seed): row for spec, row in zip(runs, rows)}
    cut = {m: 0 for m in MARGINS}
    for block in blocks:
        for h, specs in block.runs.items():
            for spec in specs:
                block.rows[(h, spec.seed)] = by_run[(spec.depth, spec.train_noise, h, spec.seed)]
            block.candidates[h] = S.Candidate(h, "coarse", epoch=block.epochs)
        best = H.leader(S.pool_at(block, store, block.epochs))
        for margin in MARGINS:
            rule = replace(options, margin=margin)
            if any(H.judge(best, S.pool_at(block, store, r), rule)["action"] == "cut" for r in block.rungs[:-1]):
                cut[margin] += 1
    return {"blocks": len(blocks), "cut_by_margin": {str(m): n for m, n in cut.items()}}


def run_problem(name: str, values: dict, out: Path, data_dir: str, options: H.SearchOptions) -> dict:
    runs = grid.sweep_runs(values, name, "fp32")
    base = make_execution({"store": str(out / f"{name}-grid"), "data_dir": data_dir})
    recs, grid_rows, grid_seconds = grid_answer(runs, base)
    started = time.perf_counter()
    result = S.run_search(runs, options, replace(base, store=out / f"{name}-search"), train)
    search_seconds = time.perf_counter() - started
    depths = []
    for rec in result.recommendations:
        truth = recs[(rec["depth"], rec["train_noise"])]
        inside = rec["h"] is not None and any(abs(rec["h"] - h) < 1e-12 for h in truth["indistinguishable"])
        depths.append({"depth": rec["depth"], "train_noise": rec["train_noise"], "search_h": rec["h"],
                       "grid_h": truth["h"], "grid_set": truth["indistinguishable"], "inside": inside})
    return {"problem": name, "values": values, "depths": depths, "model_epochs": result.model_epochs,
            "grid_model_epochs": result.grid_model_epochs, "ratio": result.model_epochs / result.grid_model_epochs,
            "grid_seconds": grid_seconds, "search_seconds": search_seconds,
            "late_bloomers": late_bloomers(runs, grid_rows, options, Store(base.store)),
            "decisions": len(result.decisions)}


# The engine's measured H100 rates, K=10 fused, bf16 (RESULTS.md, "Fig. 6 CIFAR grid"): images per
# second per pack of 10 models, by depth; a model-epoch is 50,000 training steps-images plus the
# 10,000 test images (a forward, a third of a step).
H100_RATES = {20: 105_834, 110: 23_079, 218: 11_888}
IMAGES_PER_MODEL_EPOCH = 50_000 + 10_000 / 3


def fig6_projection(ratio: float, budget: float) -> dict:
    """The Fig. 6 question (3 depths x 14 h x 5 seeds x 80 epochs) on one H100: the grid, the
    search's cap (the budget) and the search at the ratio measured on the CIFAR subsets."""
    per_depth = 14 * 5 * 80  # model-epochs
    hours = {d: per_depth * IMAGES_PER_MODEL_EPOCH / rate / 3600 for d, rate in H100_RATES.items()}
    grid = sum(hours.values())
    return {"grid_hours": grid, "cap_hours": budget * grid, "measured_ratio": ratio,
            "search_hours_at_ratio": ratio * grid, "by_depth_grid_hours": hours}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=".data/cifar10-jpeg")
    p.add_argument("--only", default=",".join(PROBLEMS))
    p.add_argument("--out", default="/tmp/robustres-search-bench")
    args = p.parse_args()
    out = Path(args.out)
    options = H.SearchOptions()
    results = [run_problem(name, PROBLEMS[name], out, args.data, options) for name in args.only.split(",")]
    lines = ["| problem | depth | search h | grid's set (point) | inside | model-epochs search / grid |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for d in r["depths"]:
            grid_set = ", ".join(f"{h:g}" for h in d["grid_set"])
            lines.append(f"| {r['problem']} | {d['depth']} | {d['search_h']:g} | {{{grid_set}}} ({d['grid_h']:g}) |"
                         f" {'yes' if d['inside'] else 'NO'} | {r['model_epochs']:,} / "
                         f"{r['grid_model_epochs']:,} = {100 * r['ratio']:.0f} % |")
    print("\n".join(lines))
    for r in results:
        print(f"{r['problem']}: grid {r['grid_seconds']:.0f} s, search {r['search_seconds']:.0f} s; late bloomers "
              f"(grid's best cut at a rung, of {r['late_bloomers']['blocks']} depths) by margin: "
              f"{r['late_bloomers']['cut_by_margin']}")
    cifar = [r for r in results if r["problem"] == "cifar"]
    if cifar:
        projection = fig6_projection(cifar[0]["ratio"], options.budget)
        print(f"Fig. 6 on one H100: grid {projection['grid_hours']:.1f} h; search at most "
              f"{projection['cap_hours']:.1f} h (budget {options.budget:g}); at the CIFAR subsets' measured ratio "
              f"{100 * projection['measured_ratio']:.0f} %: {projection['search_hours_at_ratio']:.1f} h")
        results.append({"problem": "fig6-projection", **projection})
    target = Path(__file__).parent / "results" / "search.json"
    target.write_text(json.dumps(results, indent=1, default=float))
    if any(not math.isfinite(r.get("ratio", 0.0)) for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
