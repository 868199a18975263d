"""The answer per depth: which h, as a set the evidence cannot tell apart, and one point in it.

Per block (dataset, protocol, depth, training noise), over the groups of `report.aggregate`; the
protocol is one value of every extra axis (lr, optimizer, ...: the block's `axes`), so each
combination gets its own answer:

1. Eligible h: at least `min_seeds` completed runs and no divergence or failure.
2. The best: the eligible h with the highest median of the metric (ties: the smaller h).
3. Indistinguishable from the best: the eligible h whose interval reaches the best's interval
   (intervals over seeds with the test set's noise, see stats.py). They form the set.
4. The point recommendation, after the paper's guideline "small, but not too small": the smallest
   h of the set whose interval reaches the best's median. Smaller h damps noise and gradients
   (Props. 1-2); requiring the best's median inside its interval keeps it off the set's edge, where
   another seed set would move it out ("not too small").
5. Labels: `best` (the point), `indistinguishable` (the rest of the set), `worse` (its interval
   below the best's), `over-smoothed` (worse, and smaller than every h of the set), `unstable` (a
   divergence or failure; the reason gives the rate and its interval), `stopped` (a search cut
   its runs at a rung: stopped runs never count as completed), `too few seeds`.
6. The stability edge: the largest h below the smallest h that diverged or failed. The guideline
   warning fires only when the evidence contradicts "deeper, smaller": a deeper net's stability
   edge above a shallower one's, or its whole set above the shallower one's set.

Paired comparisons: runs with the same seed share initialisation and batches across h, so every
h is compared with the best and with h = 1 seed by seed (a diverged run scores 0): P(h > other),
ties counting half, and a sign-flip permutation test (stats.paired).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .region import axes_text
from .stats import level_label, paired, rate_interval, seeds_to_separate, test_noise_half_width

BLOCK = ["dataset", "protocol", "depth", "train_noise"]  # one recommendation per block
LABELS = ("best", "indistinguishable", "worse", "over-smoothed", "unstable", "stopped", "too few seeds")
TOL = 1e-12


def _scores(runs: pd.DataFrame, key: dict, metric_column: str) -> dict[float, pd.Series]:
    """Per h of the block: the metric per seed of its finished runs (NaN for a diverged one).

    The block's runs are matched on its key exactly, as `report.aggregate` grouped them: runs whose
    training noise differs by less than TOL are other runs (other ids), and matched loosely they
    would share a seed within one h and be paired twice (or fail to pair at all). Kept apart, each
    (block, h, seed) is one run: the store holds one row per run id and every config field that
    differs between runs is in the block's key or its protocol."""
    block = runs[(runs.dataset == key["dataset"]) & (runs.protocol == key["protocol"]) & (runs.depth == key["depth"])
                 & (runs.train_noise == key["train_noise"]) & runs.status.isin(["completed", "diverged"])]
    out = {}
    for h, rows in block.groupby("h"):
        score = rows[metric_column].where(rows.status == "completed").astype(float)  # NaN: diverged
        out[float(h)] = pd.Series(score.values, index=rows.seed.values)
    return out


def _compare(scores: dict, h: float, other: float | None):
    if other is None or other not in scores or h not in scores or abs(h - other) < TOL:
        return None
    a, b = scores[h], scores[other]
    seeds = a.index.intersection(b.index)
    return paired(a[seeds].values, b[seeds].values) if len(seeds) else None


def _short(row) -> str:
    """The label of an h with too few completed runs: `stopped` when a search cut its runs."""
    return "stopped" if row.get("stopped", 0) > 0 else "too few seeds"


def _labels(rows: pd.DataFrame, chosen: set, point, min_seeds: int) -> dict:
    low_end = min(rows.loc[i, "h"] for i in chosen)
    labels = {}
    for i, row in rows.iterrows():
        if row.diverged or row.failed:
            labels[i] = "unstable"
        elif row.completed < min_seeds:
            labels[i] = _short(row)
        elif i == point.name:
            labels[i] = "best"
        elif i in chosen:
            labels[i] = "indistinguishable"
        else:
            labels[i] = "over-smoothed" if row.h < low_end else "worse"
    return labels


def _halves(row, level: float) -> tuple[float, float]:
    """(seed part, test-set part) of a group's interval half-width (the larger side)."""
    half = max(row["median"] - row.ci_low, row.ci_high - row["median"])
    noise = max(test_noise_half_width(row["median"], int(row.n_test), level)) if not pd.isna(row.n_test) else 0.0
    return math.sqrt(max(0.0, half ** 2 - noise ** 2)), noise


def more_seeds(chosen: pd.DataFrame, best, level: float) -> dict[float, int | None]:
    """Per other h of the set: about how many seeds would separate it from the best (None: no
    number would, the test set's noise spans the gap), its spread over seeds staying as measured."""
    out = {}
    best_seed, best_noise = _halves(best, level)
    for _, row in chosen.iterrows():
        if row.name == best.name:
            continue
        seed, noise = _halves(row, level)
        out[float(row.h)] = seeds_to_separate(float(best["median"] - row["median"]), (best_seed, seed),
                                              (best_noise, noise), int(min(best.completed, row.completed)))
    return out


def _more_seeds_note(needed: dict) -> str | None:
    if not needed:
        return None
    some = {h: n for h, n in needed.items() if n is not None}
    never = sorted(h for h, n in needed.items() if n is None)
    parts = []
    if some:
        h, n = min(some.items(), key=lambda item: item[1])
        parts.append(f"about {n} seeds per h would separate h={h:g} from the best")
    if never:
        parts.append(f"no number of seeds separates h in {{{', '.join(f'{h:g}' for h in never)}}} from the best "
                     "(the test set's noise spans the gap; more test examples would)")
    return "more seeds? " + "; ".join(parts)


def stability_edge(rows: pd.DataFrame) -> float | None:
    """The largest h below the smallest h that diverged or failed (all tested h when none did)."""
    bad = rows[(rows.diverged > 0) | (rows.failed > 0)]
    finished = rows[(rows.completed + rows.diverged) > 0]
    below = finished[finished.h < bad.h.min()] if not bad.empty else finished
    below = below[(below.diverged == 0) & (below.failed == 0)]
    return float(below.h.max()) if not below.empty else None


def _reason(point, best, chosen_hs: list[float], rows: pd.DataFrame, labels: dict, level: float) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    name = "median " + ("final" if point.metric == "final" else "best-epoch") + " accuracy"
    text = (f"h={point.h:g}: {name} {pct(point['median'])} % ({level_label(level)} % CI {pct(point.ci_low)}-"
            f"{pct(point.ci_high)}); indistinguishable from the best: h in {{{', '.join(f'{h:g}' for h in chosen_hs)}}}"
            f"; rule: the smallest h of that set whose interval holds the best's median")
    if point.name != best.name:
        text += f" (the best median is h={best.h:g}, {pct(best['median'])} %)"
    notes = []
    bad = rows[(rows.diverged > 0) | (rows.failed > 0)].sort_values("h")
    if len(bad) > 1 and (rows.h >= bad.h.min()).sum() == len(bad) and (bad.failed == 0).all():
        bad = pd.DataFrame([{"h": bad.h.min(), "diverged": bad.diverged.sum(), "failed": 0, "completed":
                             bad.completed.sum(), "top": True}])  # every h from here up diverged: say it once
    for _, row in bad.iterrows():
        k = int(row.diverged or row.failed)
        n = int(row.completed + row.diverged + row.failed)
        _, low, high = rate_interval(k, n, level)
        which = f"h>={row.h:g}" if row.get("top") is True else f"h={row.h:g}"
        notes.append(f"{which} {'diverged' if row.diverged else 'failed'} {k}/{n} (rate {pct(low)}-{pct(high)} %)")
    smoothed = rows[[labels[i] == "over-smoothed" for i in rows.index]]
    if not smoothed.empty:
        notes.append(f"h<={smoothed.h.max():g} over-smoothed (interval below the best's)")
    return "; ".join([text] + notes)


def _no_answer(key: dict, rows: pd.DataFrame, min_seeds: int, metric: str) -> dict:
    return {**key, "h": None, "median": None, "ci": None, "indistinguishable": [], "stability_edge":
            stability_edge(rows), "p_improvement_vs_h1": None, "metric": metric, "vs_h1": None, "seeds_to_separate": [],
            "reason": f"no h has {min_seeds} completed runs without divergence or failure"}


def _block(key, rows, runs, min_seeds):
    """Labels, paired columns and the recommendation of one block."""
    metric = str(rows.metric.iloc[0])
    level = float(rows.level.iloc[0])
    eligible = rows[(rows.completed >= min_seeds) & (rows.diverged == 0) & (rows.failed == 0)]
    scores = _scores(runs, key, "final_test_acc" if metric == "final" else "best_test_acc")
    if eligible.empty:
        return {i: ("unstable" if rows.loc[i, "diverged"] or rows.loc[i, "failed"] else _short(rows.loc[i]))
                for i in rows.index}, {}, _no_answer(key, rows, min_seeds, metric)
    best = eligible.sort_values(["median", "h"], ascending=[False, True]).iloc[0]
    chosen = eligible[eligible.ci_high >= best.ci_low - TOL]
    core = chosen[chosen.ci_high >= best["median"] - TOL].sort_values("h")
    point = core.iloc[0]
    labels = _labels(rows, set(chosen.index), point, min_seeds)
    plain = next((float(h) for h in rows.h if abs(h - 1.0) < TOL), None)
    columns = {}
    for i, row in rows.iterrows():
        vs_best, vs_h1 = _compare(scores, float(row.h), float(point.h)), _compare(scores, float(row.h), plain)
        columns[i] = (vs_best.p_improvement if vs_best else math.nan, vs_h1.p_improvement if vs_h1 else math.nan)
    chosen_hs = sorted(float(h) for h in chosen.h)
    needed = more_seeds(chosen, best, level)
    vs = _compare(scores, float(point.h), plain)
    entry = {**key, "h": float(point.h), "median": float(point["median"]), "ci": [float(point.ci_low),
             float(point.ci_high)], "indistinguishable": chosen_hs, "stability_edge": stability_edge(rows),
             "p_improvement_vs_h1": vs.p_improvement if vs else None, "metric": metric,
             "std": float(0.0 if math.isnan(point.final_std) else point.final_std),
             "vs_h1": None if vs is None else {"seeds": vs.seeds, "median_diff": vs.median_diff,
                                               "p_improvement": vs.p_improvement, "permutation_p": vs.p_value},
             "seeds_to_separate": [{"h": h, "seeds": n} for h, n in sorted(needed.items())],
             "reason": "; ".join(x for x in (_reason(point, best, chosen_hs, rows, labels, level),
                                             _more_seeds_note(needed)) if x)}
    return labels, columns, entry


def recommend(groups: pd.DataFrame, runs: pd.DataFrame, min_seeds: int) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """Label every h, pick the set and the point per block, explain it; returns (groups + label
    and paired columns, recommendations, warnings)."""
    groups = groups.copy()
    groups["label"] = ""
    groups["p_vs_best"] = np.nan  # P(this h > the recommended h), seed by seed
    groups["p_vs_h1"] = np.nan  # P(this h > h = 1), seed by seed
    recommendations = []
    for block, rows in groups.groupby(BLOCK, sort=False):  # in the groups' order: axis values sorted as numbers
        key = {**dict(zip(BLOCK, block)), "axes": rows["axes"].iloc[0] if "axes" in rows else {}}
        labels, columns, entry = _block(key, rows, runs, min_seeds)
        groups.loc[list(labels), "label"] = list(labels.values())
        for i, (vs_best, vs_h1) in columns.items():
            groups.loc[i, ["p_vs_best", "p_vs_h1"]] = [vs_best, vs_h1]
        recommendations.append(entry)
    return groups, recommendations, guideline_warnings(recommendations)


def guideline_warnings(recommendations: list[dict]) -> list[str]:
    """Only where the evidence contradicts "deeper, smaller": a deeper net's stability edge above a
    shallower one's, or its whole indistinguishable set above the shallower one's."""
    warnings = []
    recs = pd.DataFrame([r for r in recommendations if r["h"] is not None])
    if recs.empty:
        return warnings
    for (dataset, protocol, noise), block in recs.groupby(["dataset", "protocol", "train_noise"]):
        block = block.sort_values("depth").to_dict(orient="records")
        axes = axes_text(block[0]["axes"]) if "axes" in block[0] else protocol  # the extra axes, as headings say them
        where = ", ".join(x for x in (axes, f"noise {noise:g}" if noise else "") if x)
        name = f"{dataset}{f' ({where})' if where else ''}"
        for a, b in zip(block, block[1:]):
            edge_a, edge_b = a["stability_edge"], b["stability_edge"]
            if edge_a is not None and edge_b is not None and edge_b > edge_a + TOL:
                warnings.append(f"{name}: the stability edge grows with depth (depth {a['depth']}: h<={edge_a:g}, "
                                f"depth {b['depth']}: h<={edge_b:g}), against the guideline 'deeper, smaller'")
            if min(b["indistinguishable"]) > max(a["indistinguishable"]) + TOL:
                warnings.append(f"{name}: every h indistinguishable from the best at depth {b['depth']} is larger "
                                f"than every such h at depth {a['depth']}, against the guideline 'deeper, smaller'")
    return warnings
