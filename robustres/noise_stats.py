"""noise-eval's numbers with their uncertainty, by the statistics report uses (stats.py).

Why these:
- Accuracy on corrupted test inputs, per (dataset, depth, h, kind, level): the median over seeds
  with a bootstrap interval over seeds, widened by the test set's binomial noise
  (stats.seed_estimate), exactly as report's accuracies: each is a count of right answers on n
  corrupted test examples, and the seeds are few.
- Each h against h = 1, the plain ResNet, per level (h = 0.1 against it is the paper's Fig. 5
  comparison): seed by seed (stats.paired), since the runs of one seed share their initialisation
  and batches across h, and the corrupted test inputs are the same for every run.
- The relative perturbation per block (Prop. 2): the median over seeds with a bootstrap interval
  over seeds, and no test-set term: it is a ratio of norms over the whole test set, not a count.
Rows are grouped by the columns they share (`by`, e.g. a protocol column), so runs of different
protocols are never pooled. Every function takes plain frames and returns JSON-ready rows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .stats import LEVEL, RESAMPLES, SEED, paired, seed_estimate, stats

PLAIN_H = 1.0  # the plain ResNet, what every other h is compared with
CELL = ["dataset", "depth", "h", "kind", "level"]


def accuracy_table(frame: pd.DataFrame, by: tuple[str, ...] = (), level: float = LEVEL) -> list[dict]:
    """Per cell: the median accuracy over seeds with its interval (columns: CELL, accuracy, n_test)."""
    out = []
    for key, g in frame.groupby([*by, *CELL], sort=True):
        cell = dict(zip([*by, *CELL], key))
        n_test = int(g.n_test.min()) if "n_test" in g and g.n_test.notna().all() else None
        est = seed_estimate(g.accuracy.to_numpy(), n_test, "median", level)
        out.append({**_plain(cell), "median": est.value, "ci_low": est.low, "ci_high": est.high,
                    "seeds": est.seeds, "n_test": n_test, "level_of_ci": level,
                    "why_no_interval": est.why_no_interval})
    return out


def against_plain(frame: pd.DataFrame, by: tuple[str, ...] = ()) -> list[dict]:
    """Per (dataset, depth, kind, level): every h against h = 1 over the seeds both were evaluated
    with. Empty where h = 1 was not evaluated (nothing to compare with)."""
    out = []
    for key, g in frame.groupby([*by, "dataset", "depth", "kind", "level"], sort=True):
        where = dict(zip([*by, "dataset", "depth", "kind", "level"], key))
        plain = g[np.isclose(g.h, PLAIN_H)].groupby("seed").accuracy.mean()
        if plain.empty:
            continue
        for h, d in g[~np.isclose(g.h, PLAIN_H)].groupby("h"):
            mine = d.groupby("seed").accuracy.mean()
            seeds = sorted(set(mine.index) & set(plain.index))
            if not seeds:
                continue
            p = paired(mine.loc[seeds].to_numpy(), plain.loc[seeds].to_numpy())
            out.append({**_plain(where), "h": float(h), "versus_h": PLAIN_H, "seeds": p.seeds,
                        "median_diff": p.median_diff, "p_improvement": p.p_improvement, "p_value": p.p_value})
    return out


def propagation_table(prop: pd.DataFrame, by: tuple[str, ...] = (), level: float = LEVEL) -> list[dict]:
    """Per (dataset, depth, h, kind, level) and block: the median relative perturbation over seeds
    with a bootstrap interval over seeds (columns: CELL, run_id, block, value)."""
    out = []
    for key, g in prop.groupby([*by, *CELL], sort=True):
        cell = _plain(dict(zip([*by, *CELL], key)))
        x = g.pivot_table(index="block", columns="run_id", values="value").dropna(axis=1)
        median, low, high = _median_with_interval(x.to_numpy(dtype=float), level)
        why = None if x.shape[1] >= 2 else "one seed: no interval (the perturbation has no test-set noise)"
        out += [{**cell, "block": int(b), "median": float(m), "ci_low": float(lo), "ci_high": float(hi),
                 "seeds": int(x.shape[1]), "level_of_ci": level, "why_no_interval": why}
                for b, m, lo, hi in zip(x.index, median, low, high)]
    return out


def _median_with_interval(x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of x (blocks x seeds): the median and its percentile-bootstrap interval over seeds,
    all rows in one vectorized bootstrap; a row whose seeds agree (or one seed) gets the median alone."""
    median = np.median(x, axis=1)
    if x.shape[1] < 2:
        return median, median.copy(), median.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows whose seeds agree: a degenerate bootstrap, replaced below
        ci = stats.bootstrap((x,), lambda s, axis=-1: np.median(s, axis=axis), axis=1, confidence_level=level,
                             n_resamples=RESAMPLES, method="percentile", vectorized=True,
                             random_state=np.random.default_rng(SEED)).confidence_interval
    low, high = np.asarray(ci.low, dtype=float), np.asarray(ci.high, dtype=float)
    flat = (np.ptp(x, axis=1) == 0) | ~np.isfinite(low) | ~np.isfinite(high)
    return median, np.where(flat, median, low), np.where(flat, median, high)


def _plain(d: dict) -> dict:
    """numpy scalars as Python numbers (JSON), NaN kept for render.dumps to say null."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        out[k] = v
    return out


def paired_line(row: dict) -> str:
    """One comparison in words: 'h=0.1 against h=1: +3.1 points (median over 3 seeds), P(better) 1.00, p=0.250'."""
    diff = "n/a" if math.isnan(row["median_diff"]) else f"{100 * row['median_diff']:+.1f} points"
    p = "" if math.isnan(row["p_value"]) else f", p={row['p_value']:.3f}"
    return (f"h={row['h']:g} against h={row['versus_h']:g}: {diff} (median of per-seed differences over "
            f"{row['seeds']} seed{'s' if row['seeds'] != 1 else ''}), P(h={row['h']:g} better) "
            f"{row['p_improvement']:.2f}{p}")


def summarize(results: list[dict], prop: pd.DataFrame | None = None, protocols: dict | None = None,
              level: float = LEVEL) -> dict:
    """noise-eval's JSON beside its raw rows: `accuracy` (per cell, with intervals), `against_plain`
    (each h against h = 1, seed by seed) and, with the store's propagation rows, `propagation` (per
    block). `protocols` (run_id -> report's protocol string, "" when runs agree): runs of different
    protocols (another lr, optimizer, ...) are grouped apart, and every row says its `protocol`."""
    protocols = protocols or {}
    for r in results:
        r["protocol"] = protocols.get(r["run_id"], "")
    frame = pd.DataFrame(results)
    by = ("protocol",)
    out = {"accuracy": accuracy_table(frame, by, level), "against_plain": against_plain(frame, by)}
    if prop is not None:
        meta = frame.drop_duplicates("run_id")[["run_id", "dataset", "depth", "h", "protocol"]]
        prop = prop.merge(meta, on="run_id")  # the evaluated runs' rows only
        out["propagation"] = propagation_table(prop, by, level) if not prop.empty else []
    return out
