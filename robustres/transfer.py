"""The rules of `robustres search --transfer` (issue 26), as pure functions of what the shallower
depths found, so that a resumed search replays them: where a deeper depth's search starts, and
when its band of h widens.

- Depths are taken shallowest first inside a family (everything but depth: dataset, training
  noise, h rule, the other axes). The shallowest `anchors` (1 or 2) are searched as without
  --transfer. A deeper depth starts only once every shallower one of its family has settled
  (nothing left in training and nothing left to add), so its prediction uses all of them.
- The prediction is made in the grid's own value c (c = h under the fixed rule): the optimum
  behaves as c*(L) = a * L^(-alpha), L the residual blocks (datasets.residual_blocks).
  - From 2 or more settled depths: law.fit_law on their indistinguishable sets (each depth's optimum
    may move within its set in the bootstrap over seeds) gives c at this L with its interval.
  - From one: a prior. The effective h's exponent lies between 0 (one h for every depth) and 1
    (CompleteP's 1/L), so c's lies between -(1 - e) and e, e the rule's own exponent (0 fixed,
    1/2 sqrt, 1 linear; learned scales start at c, like fixed). The point takes depth-muP's 1/2.
- The band: the grid values inside the interval widened by `band` on each side (a factor on h), at
  least MIN_BAND of them (the nearest to the prediction on a log scale join): with 3, the best of
  the band can be seen to be interior.
- Widening: once the band's candidates settle, the next grid value beyond an edge joins when the
  best finished h is that edge (the optimum may lie further out), or the next smaller one when
  every h tried diverged (smaller h is more stable: Prop. 1). Refinement as without --transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RULE_EXPONENT = {"fixed": 0.0, "sqrt": 0.5, "linear": 1.0, "learned": 0.0}  # h = c / L^e
MIN_BAND = 3  # values a band starts with (fewer only when the grid has fewer)
MAX_ANCHORS = 2
TOL = 1e-12


@dataclass(frozen=True)
class Settled:
    """A settled depth's answer, as the prediction reads it."""

    depth: int
    blocks: int  # L
    hs: tuple[float, ...]  # its indistinguishable set (grid values), ascending
    scores: np.ndarray  # (len(hs), seeds): the metric per seed, over the seeds every h of the set has


def predict(settled: list[Settled], blocks: int, rule: str, level: float) -> dict:
    """c at L = `blocks`: {"h", "interval", "source": "law" | "prior", "alpha", "alpha_ci", "depths"}.
    The prior's interval always holds; a law's (from 2 or more depths) is intersected with it, since
    two or three depths' sets can leave alpha's bootstrap interval wider than anything the guideline
    allows; where the two do not meet, the prior's."""
    deepest = max(settled, key=lambda s: s.blocks)
    optimum = float(deepest.hs[int(np.argmax(np.median(deepest.scores, axis=1)))])
    e, ratio = RULE_EXPONENT.get(rule, 0.0), blocks / deepest.blocks
    prior = sorted((optimum * ratio ** (e - 1), optimum * ratio ** e))
    out = {"h": optimum * ratio ** (e - 0.5), "interval": prior, "source": "prior", "alpha": None, "alpha_ci": None,
           "depths": [s.depth for s in settled]}
    if len(settled) == 1:
        return out
    from .law import fit_law  # scipy: only when a deeper depth starts

    fit = fit_law([s.blocks for s in settled], [s.scores for s in settled], [np.log(s.hs) for s in settled],
                  predict_blocks=(blocks,), level=level)
    point, interval = fit["predicted"][0]
    low, high = sorted(interval) if interval else (point, point)
    low, high = max(low, prior[0]), min(high, prior[1])
    if low > high * (1 + 1e-9):  # apart (1e-9: a law on the prior's edge meets it, whatever the rounding)
        return {**out, "alpha": fit["alpha"], "alpha_ci": fit["alpha_ci"], "law": [point, interval]}
    low, high = min(low, high), max(low, high)
    return {**out, "h": min(max(point, low), high), "interval": [low, high], "source": "law", "alpha": fit["alpha"],
            "alpha_ci": fit["alpha_ci"]}


def band(grid: list[float], prediction: dict, widen: float) -> list[float]:
    """The grid values the search of a deeper depth starts with (ascending)."""
    positive = sorted(h for h in grid if h > 0)
    low, high = prediction["interval"][0] / widen, prediction["interval"][1] * widen
    chosen = {h for h in positive if low * (1 - TOL) <= h <= high * (1 + TOL)}
    centre = math.log(prediction["h"])
    # Distances rounded, so that two values equally far on a log scale tie exactly (the smaller wins).
    for h in sorted(positive, key=lambda h: (round(abs(math.log(h) - centre), 9), h)):
        if len(chosen) >= min(MIN_BAND, len(positive)):
            break
        chosen.add(h)
    return sorted(chosen)


def widening(grid: list[float], tried: list[float], best: float | None, all_diverged: bool) -> list[float]:
    """The grid value to add beyond the band's edge (none: the best is interior, or the grid ends)."""
    below = [h for h in grid if h < min(tried)]
    above = [h for h in grid if h > max(tried)]
    if all_diverged:
        return [max(below)] if below else []
    if best is None:
        return []
    if best == min(tried) and below:
        return [max(below)]
    if best == max(tried) and above:
        return [min(above)]
    return []


def anchors_of(depths: list[int], anchors: int) -> set[int]:
    """The depths of a family searched without a band: its shallowest `anchors`."""
    return set(sorted(depths)[:anchors])


def band_text(prediction: dict, hs: list[float], widen: float) -> str:
    """Why a band: where the prediction came from and what it says."""
    low, high = prediction["interval"]
    where = ", ".join(map(str, prediction["depths"]))
    ci = prediction["alpha_ci"]
    law = "" if prediction["alpha"] is None else f"the law of depths {where} (alpha {_two(prediction['alpha'])}" + (
        f", interval {_two(ci[0])} to {_two(ci[1])})" if ci else ", no interval)")
    prior = (f"depth {prediction['depths'][-1]}'s optimum moved by L^-alpha, alpha in [0, 1] for the effective h "
             f"(point: depth-muP's 1/2)")
    if prediction["source"] == "law":
        source = f"{law}, within {prior},"
    else:
        source = f"{prior}{f' ({law} lies outside it)' if law else ''}"
    return (f"transfer: {source} predicts h={prediction['h']:.3g} ({low:.3g} to {high:.3g}); band x{widen:g}: "
            + ", ".join(f"{h:g}" for h in hs))


def _two(x: float) -> str:
    return f"{x:.2f}".replace("-0.00", "0.00")  # a slope of -1e-17 is 0
