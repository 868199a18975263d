"""h as a law of depth, measured (issue 25, item 8): on the `depth-law-moons` preset's store, fit
the fixed rule's law on all depths but the deepest and predict the held-out one; is the
prediction inside that depth's indistinguishable set (the grid value nearest it on a log scale,
and the interval against the set's range)? alpha with its interval on every depth, for the best h
and the stability edge; which rule transfers, and does its c hold at the held-out depth?

    .venv/bin/python -m benchmarks.depth_law [--store /tmp/depth-law-moons]

The store is trained first (`robustres sweep --config depth-law-moons`) when it lacks the runs.
Results: lines on stdout (copied into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

from robustres import report as R
from robustres.datasets import effective_h
from robustres.grid import merge_preset, preset_slots
from robustres.store import Store


def _build(store, depths, predict=()):
    slots = preset_slots(merge_preset("depth-law-moons", {}), "depth-law-moons")
    ids = frozenset(s.run_id for slot in slots for s in slot)
    return R.build(store, R.Filters(depths=tuple(depths), run_ids=ids), slots, R.Gates(), predict=tuple(predict))


def _nearest(h: float, grid: list[float]) -> float:
    return min(grid, key=lambda g: abs(math.log(g / h)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", default="/tmp/depth-law-moons")
    args = p.parse_args()
    subprocess.run([sys.executable, "-m", "robustres", "sweep", "--config", "depth-law-moons", "--store", args.store],
                   check=True, capture_output=True)
    store = Store(args.store)
    every = _build(store, (4, 8, 16, 32, 64))
    for entry in every.laws:
        for what, fit in (("best h", entry), ("stability edge", entry["edge"])):
            print(f"all depths, law of the {what}: alpha {fit['alpha']}, interval {fit['alpha_ci']}, a {fit['a']}, "
                  f"h per depth {fit['h']} ({fit['reason'] or 'ok'})")
    for entry in every.rules:
        for t in entry["transfer"]:
            print(f"all depths, {t['text']}")
        print(f"all depths, the rule that transfers best: {entry['best_transfer']}")
    held = _build(store, (4, 8, 16, 32), predict=(64,))
    deep = _build(store, (64,))
    sets = {r["axes"].get("h_rule", "fixed"): r for r in deep.recommendations}
    grid = sorted(deep.groups.h.unique())
    for p_ in held.predictions:
        if p_["h"] is None:
            print(f"held-out depth 64: no prediction ({p_['why']})")
            continue
        rec = sets[p_["rule"]]
        c, (low, high) = p_["c"], p_["interval"]
        if p_["source"] == "law":  # the law predicts h; under fixed, c is h
            c = p_["h"]
        nearest = _nearest(c, grid)
        inside = any(abs(nearest - s) < 1e-9 for s in rec["indistinguishable"])
        c_ends = [low, high] if p_["source"] == "law" else [x / effective_h(1.0, p_["rule"], 64) for x in (low, high)]
        overlap = c_ends[0] <= max(rec["indistinguishable"]) and c_ends[1] >= min(rec["indistinguishable"])
        print(f"held-out depth 64, {p_['source']} ({p_['rule']}): c {c:.4g} (h {p_['h']:.4g}, interval "
              f"{low:.4g} to {high:.4g}), nearest grid c {nearest:g}; depth 64's set {rec['indistinguishable']} "
              f"(point {rec['h']:g}): nearest inside: {inside}; interval meets the set: {overlap}")


if __name__ == "__main__":
    main()
