"""h as a law of depth (issue 25): the h rules side by side, whether a rule's best c transfers
across depths, the fitted law h*(L) = a * L^(-alpha), and the h it predicts for a depth not run.
Pure functions of report's groups (statistics per h, labels from recommend.py), its
recommendations (the set and the point per depth) and the per-seed scores; scipy.stats and numpy.

L is a network's residual blocks (datasets.residual_blocks); c is the grid's value and the run
row's `h`; the h a block starts with is datasets.effective_h(c, rule, L). Why each choice:

- A family is everything but depth and rule: (dataset, training noise, the other extra axes).
  Rules are compared and laws fitted only inside one: runs of another lr are another protocol.
- A rule's best at a depth is its eligible h (labels other than unstable, too few seeds, stopped:
  recommend.py's rule) with the highest median, ties to the smaller c, as recommend.py picks its
  best. Two rules are "separated" when their intervals do not overlap, the test recommend.py uses
  for "indistinguishable"; P(A beats B) is seed by seed at their best values (stats.paired), since
  a seed fixes the initialisation and the batches whatever the rule.
- A rule transfers when one c lies in every depth's indistinguishable set (recommend.py): that c
  cannot be told from each depth's best. The regret of tuning at the shallowest depth is, per
  deeper depth, its own best minus the shallowest point's c there, paired over the shared seeds
  (median of the per-seed differences, a diverged run scoring 0, a bootstrap interval widened by
  both accuracies' test-set noise in quadrature: conservative, as the two share a test set); with
  no shared seed, the difference of medians with the two intervals' half-widths in quadrature.
- The law is fitted to the fixed rule's optimum per depth: the set's h of the highest median (the
  report's point is the smallest h near the optimum, a choice about safety; the law is about where
  the optimum lies). log h* = log a - alpha log L by least squares, from MIN_DEPTHS depths on: two
  points always lie on a line and test nothing. alpha's interval is a percentile bootstrap
  (scipy.stats.bootstrap) that resamples seeds independently per depth (a depth's seeds are its
  own sample) and, in each resample, takes that depth's optimum as the h of the highest resampled
  median among the depth's indistinguishable set: the optimum may move anywhere the evidence
  cannot exclude, and never to an h the intervals rule out. A depth's seeds are those shared by
  every h of its set (one seed is one initialisation across h).
- The stability edge's law: per depth the largest h below the first that diverged among the
  finished runs (recommend.py's edge without failures: a crash says nothing about stability),
  fitted where some h diverged. In a resample where no kept seed diverged the edge is the largest
  h tested, a lower bound; where the smallest h diverged there is no edge and no interval.
- Predictions at a depth D not run: from the law (its line at L_D, the interval the bootstrap's
  lines give there) and from the rule that transfers best (the smallest worst-depth regret): its c
  (the shallowest point when in every set, else the common c nearest it) at L_D, the interval the
  common set's ends. `extrapolated` when D lies outside the depths the answer was drawn from.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .datasets import check_depth, effective_h, residual_blocks
from .errors import SpecError
from .stats import level_label, paired, seed_estimate, stats, test_noise_half_width

MIN_DEPTHS = 3  # depths a law needs (two points always fit a line)
RESAMPLES = 1999  # of the law's bootstrap: enough for 95 % percentile ends, fast on 10,000 runs
SEED = 0  # every random choice is seeded: the same store gives the same report
ELIGIBLE = ("best", "indistinguishable", "worse", "over-smoothed")  # recommend.py's labels of eligible h
KEY = ["dataset", "protocol", "depth", "train_noise"]
TOL = 1e-9


def family_of(axes: dict) -> tuple:
    """The extra axes but h_rule, as a hashable key: a family's rules and depths are compared."""
    return tuple(sorted((k, v) for k, v in (axes or {}).items() if k != "h_rule"))


def annotate(groups: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Groups with `h_rule`, `blocks` (L) and `effective_h` (the h the blocks start with) added."""
    one = runs.drop_duplicates("protocol").set_index("protocol")
    rule = one["h_rule"].fillna("fixed") if "h_rule" in one else pd.Series("fixed", index=one.index)
    out = groups.copy()
    out["h_rule"] = out.protocol.map(rule).fillna("fixed")
    model = out.protocol.map(one["model"])
    out["blocks"] = [residual_blocks(m, int(d)) for m, d in zip(model, out.depth)]
    out["effective_h"] = [effective_h(float(c), r, int(b)) for c, r, b in zip(out.h, out.h_rule, out.blocks)]
    return out


def seed_scores(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (dataset, protocol, depth, train_noise, h), the metric per seed (columns); NaN: diverged."""
    done = runs[runs.status.isin(["completed", "diverged"])]
    score = done[column].where(done.status == "completed").astype(float)
    frame = done[KEY + ["h", "seed"]].assign(score=score)
    return frame.groupby(KEY + ["h", "seed"]).score.first().unstack("seed")


def best_row(rows: pd.DataFrame):
    """A block's best: the eligible h of the highest median, ties to the smaller c (None: none)."""
    eligible = rows[rows.label.isin(ELIGIBLE)]
    if eligible.empty:
        return None
    return eligible.sort_values(["median", "h"], ascending=[False, True]).iloc[0]


def _scores_of(scores: pd.DataFrame, row) -> pd.Series:
    key = (row.dataset, row.protocol, row.depth, row.train_noise, row.h)
    return scores.loc[key] if key in scores.index else pd.Series(dtype=float)


def _pair(a: pd.Series, b: pd.Series):
    common = a.index.intersection(b.index)
    return paired(a[common].values, b[common].values) if len(common) else None


def separated(a, b) -> bool:
    """Two intervals told apart: they do not overlap (recommend.py's test, turned round)."""
    return a.ci_low > b.ci_high + TOL or b.ci_low > a.ci_high + TOL


def side_by_side(depth: int, bests: dict, scores: pd.DataFrame) -> dict:
    """One depth: each rule's best with its interval, P(A beats B) at the bests, and who wins."""
    rules = [{"rule": r, "c": float(b.h), "h": float(b.effective_h), "blocks": int(b.blocks),
              "median": float(b["median"]), "ci": [float(b.ci_low), float(b.ci_high)], "seeds": int(b.completed)}
             for r, b in bests.items()]
    pairs = []
    names = list(bests)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p = _pair(_scores_of(scores, bests[a]), _scores_of(scores, bests[b]))
            pairs.append({"a": a, "b": b, "seeds": p.seeds if p else 0,
                          "p_a_beats_b": None if p is None else p.p_improvement,
                          "median_diff": None if p is None or math.isnan(p.median_diff) else p.median_diff,
                          "separated": bool(separated(bests[a], bests[b]))})
    order = sorted(names, key=lambda r: -bests[r]["median"])
    winner = order[0] if order else None
    beaten = [r for r in order[1:] if separated(bests[winner], bests[r])]
    close = [r for r in order[1:] if r not in beaten]
    entry = {"depth": depth, "rules": rules, "pairs": pairs,
             "winner": winner if len(order) > 1 and not close else None}
    entry["text"] = _versus_text(depth, winner, bests, beaten, close, pairs)
    return entry


def _versus_text(depth, winner, bests, beaten, close, pairs) -> str:
    if winner is None:
        return f"depth {depth}: no rule has an eligible h"
    if not beaten and not close:
        return f"depth {depth}: {winner} alone, best {100 * bests[winner]['median']:.1f} %"
    p_of = {(p["a"], p["b"]): p["p_a_beats_b"] for p in pairs}
    parts = []
    for r in beaten:
        gap = 100 * (bests[winner]["median"] - bests[r]["median"])
        p = p_of.get((winner, r), None if p_of.get((r, winner)) is None else 1 - p_of[(r, winner)])
        parts.append(f"ahead of {r} by {gap:.1f} points" + (f" (P({winner} > {r}) {p:.2f})" if p is not None else ""))
    if close:
        parts.append(f"not separated from {', '.join(close)} (intervals overlap)")
    lead = f"{winner} wins" if not close else f"{winner} has the highest median but does not win"
    return f"depth {depth}: {lead} ({100 * bests[winner]['median']:.1f} %), " + "; ".join(parts)


def common_set(sets: list[list[float]]) -> list[float]:
    """The c in every depth's set (grid floats matched to 9 significant digits)."""
    keyed = [{float(f"{c:.9g}") for c in s} for s in sets]
    return sorted(set.intersection(*keyed)) if keyed else []


def transfer_c(point: float, common: list[float]) -> float | None:
    """The c a transferring rule names: the shallowest point when every set holds it, else the
    common c nearest it on a log scale (h lives on one)."""
    if not common:
        return None
    return min(common, key=lambda c: (abs(math.log(c / point)) if c > 0 and point > 0 else abs(c - point), c))


def regret(best, at_c, a: pd.Series, b: pd.Series, level: float) -> dict:
    """Accuracy lost at a depth by using c instead of the depth's own best (fractions)."""
    common = a.index.intersection(b.index)
    noise = [max(test_noise_half_width(float(r["median"]), int(r.n_test), level))
             if not pd.isna(r.n_test) and not pd.isna(r["median"]) else 0.0 for r in (best, at_c)]
    if len(common):
        diff = np.nan_to_num(a[common].values.astype(float)) - np.nan_to_num(b[common].values.astype(float))
        est = seed_estimate(diff, None, "median", level)
        widen = math.hypot(*noise)
        low, high = math.hypot(est.value - est.low, widen), math.hypot(est.high - est.value, widen)
        return {"lost": est.value, "interval": [est.value - low, est.value + high], "seeds": len(common),
                "paired": True}
    lost = float(best["median"] - at_c["median"])
    low = math.hypot(best["median"] - best.ci_low, at_c.ci_high - at_c["median"])
    high = math.hypot(best.ci_high - best["median"], at_c["median"] - at_c.ci_low)
    return {"lost": lost, "interval": [lost - low, lost + high], "seeds": 0, "paired": False}


# ---------------------------------------------------------------------------------------------
# The law: log h = log a - alpha log L, with a bootstrap over seeds per depth
# ---------------------------------------------------------------------------------------------


def line(x: np.ndarray, y: np.ndarray) -> tuple:
    """Least-squares slope and intercept of y on x; y may carry resamples along its later axes."""
    x = np.asarray(x, dtype=float)
    shape = (-1,) + (1,) * (y.ndim - 1)
    xm = (x - x.mean()).reshape(shape)
    slope = (xm * (y - y.mean(axis=0))).sum(axis=0) / float((xm ** 2).sum())
    return slope, y.mean(axis=0) - slope * x.mean()


def optimum_target(matrix: np.ndarray, log_h: np.ndarray, idx) -> np.ndarray:
    """log h of the highest median over the seeds `idx` (ties: the first, the smaller h)."""
    medians = np.median(matrix[:, idx.astype(int)], axis=-1)  # (H,) or (H, resamples)
    return log_h[np.argmax(medians, axis=0)]


def edge_target(matrix: np.ndarray, log_h: np.ndarray, idx) -> np.ndarray:
    """log h of the largest h below the first at which one of the seeds `idx` diverged (NaN: the
    smallest did; none diverged: the largest h tested, a lower bound)."""
    bad = matrix[:, idx.astype(int)].max(axis=-1) > 0  # (H,) or (H, resamples)
    first = np.where(bad.any(axis=0), np.argmax(bad, axis=0), len(log_h))
    return np.where(first > 0, log_h[np.maximum(first - 1, 0)], np.nan)


def fit_law(blocks, matrices, log_hs, target=optimum_target, predict_blocks=(), level: float = 0.95,
            resamples: int = RESAMPLES) -> dict:
    """Fit log h = log a - alpha log L across depths. Per depth: L, a matrix (h x seeds) of its
    scores (or divergences, for the edge) and the log h of its rows; `target` picks a depth's h
    from a set of its seeds. Returns alpha, a, each depth's h, alpha's percentile bootstrap
    interval over seeds resampled per depth, and the fitted h at `predict_blocks` with theirs."""
    log_l = np.log(np.asarray(blocks, dtype=float))
    seeds = [np.arange(m.shape[1], dtype=float) for m in matrices]

    def statistic(*idx, axis=-1):  # noqa: ARG001  (scipy passes axis; the seeds are the last one)
        y = np.stack([target(m, lh, i) for m, lh, i in zip(matrices, log_hs, idx)])
        slope, intercept = line(log_l, y)
        return np.stack([-slope] + [intercept + slope * math.log(b) for b in predict_blocks])

    point = statistic(*seeds)
    hs = [float(math.exp(target(m, lh, s))) for m, lh, s in zip(matrices, log_hs, seeds)]
    out = {"alpha": float(point[0]), "a": float(math.exp(line(log_l, np.log(hs))[1])), "h": hs,
           "alpha_ci": None, "predicted": [[float(math.exp(p)), None] for p in point[1:]], "why_no_interval": None}
    if min(m.shape[1] for m in matrices) < 2:
        out["why_no_interval"] = "a depth has fewer than 2 seeds shared by its h"
        return out
    boot = stats.bootstrap(seeds, statistic, vectorized=True, n_resamples=resamples, method="percentile",
                           confidence_level=level, random_state=np.random.default_rng(SEED), batch=200)
    low, high = np.atleast_1d(boot.confidence_interval.low), np.atleast_1d(boot.confidence_interval.high)
    if np.isnan(low).any() or np.isnan(high).any():
        out["why_no_interval"] = "in some resamples a depth has no edge (its smallest h diverged)"
        return out
    out["alpha_ci"] = [float(low[0]), float(high[0])]
    out["predicted"] = [[float(math.exp(p)), [float(math.exp(lo)), float(math.exp(hi))]]
                        for p, lo, hi in zip(point[1:], low[1:], high[1:])]
    return out


# ---------------------------------------------------------------------------------------------
# From report's tables: rules, transfer, laws and predictions per family
# ---------------------------------------------------------------------------------------------

RULE_ORDER = ("fixed", "sqrt", "linear", "learned")


def _rules_in(fg: pd.DataFrame) -> list[str]:
    return sorted(fg.h_rule.unique(), key=lambda r: (RULE_ORDER.index(r) if r in RULE_ORDER else 99, r))


def _key(row_or_rec, h=None) -> tuple:
    key = tuple(row_or_rec[k] for k in KEY)
    return key if h is None else key + (h,)


def transfer(rule: str, rows: pd.DataFrame, rec_of: dict, scores: pd.DataFrame, level: float) -> dict:
    """One rule across depths: each depth's point and set, whether one c lies in every set, and
    the regret of the shallowest depth's point at each deeper depth."""
    depths = []
    for depth, d in rows.groupby("depth"):
        rec, blocks, best = rec_of.get(_key(d.iloc[0])), int(d.blocks.iloc[0]), best_row(d)
        answered = rec is not None and rec["h"] is not None
        depths.append({"depth": int(depth), "blocks": blocks, "c": rec["h"] if answered else None,
                       "h": effective_h(rec["h"], rule, blocks) if answered else None,
                       "best_c": None if best is None else float(best.h),
                       "set": list(rec["indistinguishable"]) if answered else [], "_rows": d, "_best": best})
    entry = {"rule": rule, "depths": [{k: v for k, v in d.items() if not k.startswith("_")} for d in depths]}
    missing = [d["depth"] for d in depths if d["c"] is None]
    if missing:
        return {**entry, "transfers": None, "common": [], "c": None, "regret": [], "worst_regret": None,
                "text": f"{rule}: no answer at depth {', '.join(map(str, missing))}: transfer not judged"}
    common = common_set([d["set"] for d in depths])
    c0 = depths[0]["c"]
    regrets = []
    for d in depths[1:]:
        at = d["_rows"][(d["_rows"].h - c0).abs() < TOL]
        if at.empty or d["_best"] is None:
            regrets.append({"depth": d["depth"], "c": c0, "lost": None, "interval": None, "seeds": 0,
                            "paired": False, "why": f"c={c0:g} was not run at this depth"})
            continue
        best, here = d["_best"], at.iloc[0]
        regrets.append({"depth": d["depth"], "c": c0,
                        **regret(best, here, _scores_of(scores, best), _scores_of(scores, here), level)})
    lost = [r["lost"] for r in regrets if r["lost"] is not None]
    entry.update(transfers=bool(common), common=common, c=transfer_c(c0, common), regret=regrets,
                 worst_regret=max(lost) if lost else None)
    entry["text"] = _transfer_text(entry, c0, level)
    return entry


def _transfer_text(t: dict, c0: float, level: float) -> str:
    where = ", ".join(f"depth {d['depth']}: c={d['c']:g} of {{{', '.join(f'{c:g}' for c in d['set'])}}}"
                      for d in t["depths"])
    head = (f"{t['rule']}: transfers, c in {{{', '.join(f'{c:g}' for c in t['common'])}}} at every depth"
            if t["transfers"] else f"{t['rule']}: does not transfer, no c lies in every depth's set")
    lost = "; ".join(f"depth {r['depth']}: {100 * r['lost']:.1f} points ({level_label(level)} % CI "
                     f"{100 * r['interval'][0]:.1f} to {100 * r['interval'][1]:.1f})" if r["lost"] is not None
                     else f"depth {r['depth']}: {r['why']}" for r in t["regret"])
    return f"{head} ({where}); tuned at depth {t['depths'][0]['depth']} (c={c0:g}), lost " + (lost or "nothing")


def _matrix(frame: pd.DataFrame, keys: list[tuple]) -> np.ndarray:
    """Rows `keys` of a per-seed frame, over the seeds every one of them has."""
    return frame.loc[keys].dropna(axis=1, how="any").values.astype(float)


def _law_entry(fixed: pd.DataFrame, rec_of: dict, scores, diverged, level: float, predict_blocks) -> dict:
    """The fixed rule's law of the optimum and of the stability edge in one family."""
    depths, blocks, matrices, log_hs, edge = [], [], [], [], ([], [], [], [])
    for depth, d in fixed.groupby("depth"):
        rec = rec_of.get(_key(d.iloc[0]))
        if rec is not None and rec["h"] is not None and all(c > 0 for c in rec["indistinguishable"]):
            hs = sorted(rec["indistinguishable"])
            rows = [_key(d.iloc[0]) + (float(h),) for h in hs]
            depths.append(int(depth)), blocks.append(int(d.blocks.iloc[0]))
            matrices.append(_matrix(scores, rows)), log_hs.append(np.log(hs))
        finished = d[(d.completed + d.diverged) > 0].sort_values("h")
        if (finished.diverged > 0).any() and finished.diverged.iloc[0] == 0 and (finished.h > 0).all():
            keys = [_key(r) + (float(r["h"]),) for _, r in finished.iterrows()]
            for part, value in zip(edge, (int(depth), int(d.blocks.iloc[0]), _matrix(diverged, keys),
                                          np.log(finished.h.values.astype(float)))):
                part.append(value)
    return {"optimum": _fit(depths, blocks, matrices, log_hs, optimum_target, level, predict_blocks),
            "edge": _fit(*edge, edge_target, level, predict_blocks)}


def _fit(depths, blocks, matrices, log_hs, target, level, predict_blocks) -> dict:
    base = {"depths": depths, "blocks": blocks, "n_depths": len(depths)}
    if len(set(blocks)) < MIN_DEPTHS:
        return {**base, "alpha": None, "alpha_ci": None, "a": None, "h": None, "predicted": [],
                "reason": f"{len(set(blocks))} depth(s) with an answer; a law needs {MIN_DEPTHS}"}
    if any(m.shape[1] == 0 for m in matrices):
        return {**base, "alpha": None, "alpha_ci": None, "a": None, "h": None, "predicted": [],
                "reason": "a depth has no seed shared by its h"}
    fit = fit_law(blocks, matrices, log_hs, target, predict_blocks, level)
    return {**base, **{k: fit[k] for k in ("alpha", "alpha_ci", "a", "h", "predicted")},
            "reason": fit["why_no_interval"]}


def check_predict_depth(depth: int, models) -> None:
    """A depth to predict must be one the network takes (bad input otherwise: SpecError)."""
    if depth <= 0:
        raise SpecError(f"--predict-depth must be a depth > 0, got {depth}")
    for model in sorted(set(models)):
        try:
            check_depth(model, depth)
        except SpecError as exc:
            raise SpecError(f"--predict-depth {depth}: {exc}") from None


def analyse(groups: pd.DataFrame, recs: list[dict], runs: pd.DataFrame, column: str, level: float,
            predict: tuple[int, ...] = ()) -> tuple[list[dict], list[dict], list[dict]]:
    """(rules, laws, predictions) per family; a family with one depth and one rule has none."""
    g = annotate(groups, runs)
    scores = seed_scores(runs, column)
    done = runs[runs.status.isin(["completed", "diverged"])]
    diverged = done[KEY + ["h", "seed"]].assign(d=(done.status == "diverged").astype(float)) \
        .groupby(KEY + ["h", "seed"]).d.first().unstack("seed")
    rec_of = {_key(r): r for r in recs}
    g["_family"] = [(d, n, family_of(a)) for d, n, a in zip(g.dataset, g.train_noise, g["axes"])]
    rules, laws, predictions = [], [], []
    for family, fg in g.groupby("_family", sort=False):
        names, depths = _rules_in(fg), sorted(fg.depth.unique())
        if len(names) < 2 and len(depths) < 2:
            continue  # nothing to compare: report's per-depth answer says it all
        where = {"dataset": family[0], "train_noise": float(family[1]), "axes": dict(family[2])}
        model = runs[runs.protocol.isin(fg.protocol)].model.iloc[0]
        blocks_at = [residual_blocks(model, d) for d in predict]
        sides = []
        if len(names) > 1:
            for depth in depths:
                bests = {r: b for r in names if (b := best_row(fg[(fg.depth == depth) & (fg.h_rule == r)])) is not None}
                sides.append(side_by_side(int(depth), bests, scores))
        transfers = [transfer(r, fg[fg.h_rule == r], rec_of, scores, level) for r in names] if len(depths) > 1 else []
        best = _best_transfer(transfers)
        rules.append({**where, "rules": names, "side_by_side": sides, "transfer": transfers,
                      "best_transfer": None if best is None else best["rule"]})
        law = _law_entry(fg[fg.h_rule == "fixed"], rec_of, scores, diverged, level, blocks_at) \
            if "fixed" in names and len(depths) >= MIN_DEPTHS else None
        laws.append({**where, "rule": "fixed", **(_law_fields(law["optimum"]) if law else _no_law(names, depths)),
                     "edge": _law_fields(law["edge"]) if law else None})
        predictions += _predictions(where, predict, blocks_at, law, best)
    return rules, laws, predictions


def _best_transfer(transfers: list[dict]) -> dict | None:
    """The rule that transfers best: of those that transfer, the least worst-depth regret."""
    ok = [t for t in transfers if t["transfers"]]
    return min(ok, key=lambda t: t["worst_regret"] if t["worst_regret"] is not None else 0.0) if ok else None


def _law_fields(fit: dict) -> dict:
    return {k: fit[k] for k in ("alpha", "alpha_ci", "a", "depths", "blocks", "n_depths", "h", "reason")}


def _no_law(names, depths) -> dict:
    reason = "no fixed-rule runs" if "fixed" not in names else \
        f"{len(depths)} depth(s); a law needs {MIN_DEPTHS}"
    return {"alpha": None, "alpha_ci": None, "a": None, "depths": [int(d) for d in depths], "blocks": [],
            "n_depths": len(depths), "h": None, "reason": reason}


def _predictions(where: dict, predict, blocks_at, law, best) -> list[dict]:
    out = []
    for i, (depth, blocks) in enumerate(zip(predict, blocks_at)):
        fit = law["optimum"] if law else None
        if fit and fit["alpha"] is not None:
            h, interval = fit["predicted"][i]
            out.append({**where, "depth": depth, "rule": "fixed", "source": "law", "c": h, "h": h,
                        "interval": interval, "extrapolated": not min(fit["depths"]) <= depth <= max(fit["depths"])})
        if best is not None:
            known = [d["depth"] for d in best["depths"]]
            ends = [effective_h(c, best["rule"], blocks) for c in (min(best["common"]), max(best["common"]))]
            out.append({**where, "depth": depth, "rule": best["rule"], "source": "transfer", "c": best["c"],
                        "h": effective_h(best["c"], best["rule"], blocks), "interval": sorted(ends),
                        "extrapolated": not min(known) <= depth <= max(known)})
        if not out or out[-1]["depth"] != depth:  # neither: say why, in the same shape
            why = (law["optimum"]["reason"] if law else "no fixed-rule law") + "; no rule transfers"
            out.append({**where, "depth": depth, "rule": None, "source": None, "c": None, "h": None,
                        "interval": None, "extrapolated": None, "why": why})
    return out


# ---------------------------------------------------------------------------------------------
# Sentences, for the text output and the page
# ---------------------------------------------------------------------------------------------


def _name(entry: dict) -> str:
    where = ", ".join(x for x in ([f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in entry["axes"].items()]
                                  + ([f"noise {entry['train_noise']:g}"] if entry["train_noise"] else [])) if x)
    return entry["dataset"] + (f" ({where})" if where else "")


def law_text(entry: dict, level: float) -> list[str]:
    """The law's lines: the optimum's and the stability edge's."""
    lines = []
    for what, fit in (("best h", entry), ("stability edge", entry.get("edge"))):
        if fit is None:
            continue
        if fit["alpha"] is None:
            lines.append(f"law of the {what}, {_name(entry)}: not fitted ({fit['reason']})")
            continue
        ci = (f"{level_label(level)} % CI {fit['alpha_ci'][0]:.2f} to {fit['alpha_ci'][1]:.2f}"
              if fit["alpha_ci"] else f"no interval: {fit['reason']}")
        points = ", ".join(f"L={b}: {h:.3g}" for b, h in zip(fit["blocks"], fit["h"]))
        lines.append(f"law of the {what}, {_name(entry)}, fixed rule: h(L) = {fit['a']:.3g} * L^-{fit['alpha']:.2f} "
                     f"over {fit['n_depths']} depths ({points}); alpha {fit['alpha']:.2f} ({ci})")
    return lines


def prediction_text(p: dict) -> str:
    if p["h"] is None:
        return f"predicted h at depth {p['depth']}, {_name(p)}: none ({p['why']})"
    how = "the fixed rule's law" if p["source"] == "law" else f"the {p['rule']} rule's transferring c={p['c']:g}"
    interval = f"interval {p['interval'][0]:.3g} to {p['interval'][1]:.3g}" if p["interval"] else "no interval"
    flag = "; extrapolated: outside the measured depths" if p["extrapolated"] else ""
    return f"predicted h at depth {p['depth']}, {_name(p)}, from {how}: h = {p['h']:.3g} ({interval}){flag}"
