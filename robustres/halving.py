"""The rules of `robustres search`: successive halving over h with paired seeds, as pure functions
of the scores the store holds (so a resumed search makes the same decisions).

- Start coarse: every `stride`-th value of the h grid, both ends kept. Refinement later fills in
  grid values, so every run the search trains is a run of the full grid (same run ids: a search
  and a sweep share their runs, and a search can be checked against its grid).
- Rungs: epochs of the schedule where candidates are compared. By default 1/8, 1/4 and 1/2 of it,
  and the epoch before each lr drop (accuracy jumps after a drop; comparing just before it keeps
  a drop from favouring whoever reached it first), and the end.
- At a rung an h is cut only (a) when one of its seeds diverged (report never recommends such an
  h) or (b) when it is worse than the rung's leader by more than `margin` with stated confidence:
  a one-sided paired sign-flip permutation test (stats.p_worse) at p <= 1 - level. The margin
  guards against late bloomers: an h a little behind early may still win at the end.
- At least `keep` of the coarse values (and 2) stay alive: the least-bad cut ones come back.
- Refine: when no candidate is left in training, the grid values closest to the log-midpoints
  between the best finished h and its tried neighbours join, from epoch 0, through the same rungs.
- Budget: a candidate that passed a rung trains on to the next rung only while the budget, after
  that, still holds the way to the end for the best `least` of them; otherwise the lowest-ranked
  are paused (stopped, reason "budget", with their rung's evidence). The search never spends more
  than its budget, and pauses as late as it can, where the ranking knows the most. A budget in
  training FLOPs is shared by what each depth's grid costs and charged in FLOPs (check_budget).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, replace

from .errors import SpecError
from .spec import MIN_SEEDS

MAX_BUDGET = 1e15  # model-epochs: more than any grid could hold
MAX_FLOP_BUDGET = 1e30  # FLOPs: likewise
MODEL_EPOCHS, FLOP = "model_epochs", "flop"
# A FLOP budget: a number, an optional SI prefix, then "flop" in any case: 2e15flop, 500Tflop, 2PFLOP.
FLOP_BUDGET = re.compile(r"\s*(?P<number>[^a-zA-Z]*(?:e[-+]?\d+)?)\s*(?P<prefix>[kMGTPE]?)flop\s*", re.IGNORECASE)
PREFIXES = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
# --transfer's default budget: issue 26's target share of the grid's model-epochs. The shallowest depth
# gets most of it (its whole search); a deeper one its band (H.transfer_shares).
TRANSFER_BUDGET = 0.2
TOL = 1e-12  # of a budget's float arithmetic (h values are compared exactly: they are the grid's floats)


class BudgetShort(SpecError):
    """--transfer's budget cannot pay for the least search; `least`: a budget that can, as given."""

    def __init__(self, least: str, message: str):
        super().__init__(message)
        self.least = least


@dataclass(frozen=True)
class SearchOptions:
    """What `search --budget/--rungs/--stride/--margin/--keep` and a preset's `search:` set."""

    budget: float = 0.3  # <= 1: a fraction of the full grid's model-epochs; > 1: model-epochs; or FLOPs (below)
    rungs: tuple[int, ...] = ()  # epochs where h values are compared; (): from the schedule
    stride: int = 2  # start with every stride-th h of the grid (both ends)
    # Cut only h worse than the leader by more than this (accuracy, 0..1). 0.02: on the benchmark's
    # 9 depths the grid's best would have been cut at some rung 3 times with no margin, once with
    # 0.01, never with 0.02 (benchmarks/RESULTS.md, "Search").
    margin: float = 0.02
    keep: float = 0.25  # always keep at least this fraction of the starting h values alive
    level: float = 0.95  # confidence of a cut: p <= 1 - level (stats.LEVEL; scipy loads only to judge)
    budget_unit: str = MODEL_EPOCHS  # or FLOP: `budget` is training FLOPs, and candidates are charged in them
    # --transfer (transfer.py): deeper depths start from a band around the h the shallower ones predict.
    transfer: bool = False
    anchors: int = 1  # the shallowest depths of a family searched whole (1 or 2)
    # The predicted interval widened by this factor on h at each end: 1.5 takes in about one more value
    # of a 1-2-5 grid where the interval's end falls between two of them.
    widen: float = 1.5
    # Seeds as a budget: rungs compare the first `early_seeds` seeds of every h (0: all of them); an h
    # that reaches the end on them gets the others, to the end, before it is judged there and answered.
    early_seeds: int = 0
    budget_given: bool = True  # False: --transfer's default, raised to the least that pays when 0.2 cannot

    def to_dict(self) -> dict:
        out = {"budget": self.budget, "rungs": list(self.rungs), "stride": self.stride, "margin": self.margin,
               "keep": self.keep, "level": self.level}
        # Named only when FLOPs (or transfer), so that a search without them keeps the id (and state file) it had.
        out = {**out, "budget_unit": FLOP} if self.budget_unit == FLOP else out
        out = {**out, "early_seeds": self.early_seeds} if self.early_seeds else out
        return {**out, "transfer": True, "anchors": self.anchors, "widen": self.widen} if self.transfer else out


# The unit is said in the budget; whether it was given, by its presence.
KEYS = tuple(k for k in SearchOptions.__dataclass_fields__ if k not in ("budget_unit", "budget_given"))


def _number(name: str, value, low: float, high: float, whole: bool = False):
    try:
        if isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"search {name}: {value!r} is not a {'whole ' if whole else ''}number") from None
    if whole:
        if not (math.isfinite(number) and number.is_integer()):
            raise SpecError(f"search {name}: {value!r} is not a whole number")
        number = int(number)
    if not math.isfinite(number):  # nan, inf, and 1e400 (which reads as inf)
        raise SpecError(f"search {name}: {value!r} is not a finite number")
    if not low <= number <= high:
        raise SpecError(f"search {name}: {value!r} must lie in [{low:g}, {high:g}]")
    return number


def make_options(values: dict) -> SearchOptions:
    """Validated search options from flags and a preset's `search:` mapping (None: the default)."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise SpecError(f"search: unknown key {unknown[0]!r}; known keys: {', '.join(KEYS)}")
    v = {k: x for k, x in values.items() if x is not None}
    out = {}
    if isinstance(v.get("budget"), str) and re.search("flop", v["budget"], re.IGNORECASE):
        out["budget"], out["budget_unit"] = flop_budget(v.pop("budget")), FLOP
    if "budget" in v:
        out["budget"] = _number("budget", v["budget"], -math.inf, math.inf)  # the range is said below, once
        if not 0 < out["budget"] <= MAX_BUDGET or (out["budget"] > 1 and out["budget"] != int(out["budget"])):
            raise SpecError(f"search budget: {v['budget']!r} is neither a share of the grid's model-epochs (0 < B <= 1)"
                            f" nor a whole number of model-epochs (2 to {MAX_BUDGET:,.0f})")
    if "rungs" in v:
        items = v["rungs"] if isinstance(v["rungs"], (list, tuple)) else str(v["rungs"]).split(",")
        if not items or any(not str(x).strip() for x in items):
            raise SpecError(f"search rungs: {v['rungs']!r} has an empty item; give epochs, e.g. 4,8,20")
        rungs = tuple(_number("rungs", x, 1, 10**6, whole=True) for x in items)
        if list(rungs) != sorted(set(rungs)):
            raise SpecError(f"search rungs: must be strictly increasing epochs, got {','.join(map(str, rungs))}")
        out["rungs"] = rungs
    if "stride" in v:
        out["stride"] = _number("stride", v["stride"], 1, 1000, whole=True)
    if "margin" in v:
        out["margin"] = _number("margin", v["margin"], 0, 1)
    if "keep" in v:
        out["keep"] = _number("keep", v["keep"], 0, 1)
    if "level" in v:
        out["level"] = _number("level", v["level"], 0.5, 0.999)
    if "transfer" in v:
        if not isinstance(v["transfer"], bool):
            raise SpecError(f"search transfer: {v['transfer']!r} is not true or false")
        out["transfer"] = v["transfer"]
    if "anchors" in v:
        out["anchors"] = _number("anchors", v["anchors"], 1, 2, whole=True)
    if "widen" in v:
        out["widen"] = _number("widen", v["widen"], 1, 100)
    if "early_seeds" in v:
        out["early_seeds"] = _number("early_seeds", v["early_seeds"], MIN_SEEDS, 10**6, whole=True)
    if out.get("transfer") and "budget" not in out:
        out["budget"], out["budget_given"] = TRANSFER_BUDGET, False
    lone = [k for k in ("anchors", "widen") if k in out and not out.get("transfer")]
    if lone:
        raise SpecError(f"search {lone[0]}: only with transfer (--transfer, or `transfer: true` in `search:`)")
    return SearchOptions(**out)


def flop_budget(text: str) -> float:
    """A budget in training FLOPs, read from FLOP_BUDGET's grammar: a whole number of FLOPs."""
    match = FLOP_BUDGET.fullmatch(text)
    # The prefix is matched case-insensitively with "flop"; M and m (or E and e) must not be confused.
    prefix = match["prefix"] if match else ""
    try:
        number = float(match["number"]) if match and prefix in PREFIXES else math.nan
    except ValueError:
        number = math.nan
    flops = number * PREFIXES.get(prefix, 1) if math.isfinite(number) else math.nan
    if not (math.isfinite(flops) and 1 <= flops <= MAX_FLOP_BUDGET):
        raise SpecError(f"search budget: {text!r} is not a budget in FLOPs: give a number of at least 1, an optional "
                        f"prefix k, M, G, T, P or E and 'flop', e.g. 2e15flop or 500Tflop")
    return float(math.floor(flops))


def rungs_for(options: SearchOptions, epochs: int, milestones: tuple[int, ...]) -> tuple[int, ...]:
    """The rungs of a schedule, ending at its last epoch (given rungs beyond it are refused)."""
    if options.rungs:
        if options.rungs[-1] > epochs:
            raise SpecError(f"search rungs: epoch {options.rungs[-1]} is past the schedule's {epochs} epochs")
        chosen = set(options.rungs)
    else:
        chosen = {math.ceil(epochs / 8), math.ceil(epochs / 4), math.ceil(epochs / 2)} | set(milestones)
    return tuple(sorted(r for r in chosen | {epochs} if 1 <= r <= epochs))


def coarse(hs: list[float], stride: int) -> list[float]:
    """Every stride-th value of the sorted grid, the largest always included."""
    hs = sorted(hs)
    picked = hs[::stride]
    return picked if picked[-1] == hs[-1] else picked + [hs[-1]]


def least_kept(n_start: int, keep: float) -> int:
    return min(n_start, max(2, math.ceil(keep * n_start)))


def grid_blocks(runs: list) -> dict:
    """A grid's runs by block (everything but h and seed), then by h: {block spec: {h: [runs]}}."""
    grouped: dict = {}
    for spec in runs:
        grouped.setdefault(spec.with_(h=0.0, seed=0), {}).setdefault(spec.h, []).append(spec)
    return grouped


def check_budget(runs: list, options: SearchOptions, epoch_flops: dict | None = None,
                 pools: dict | None = None) -> tuple[int, int, dict]:
    """(the grid's model-epochs, the budget in its unit, each block's budget in that unit); refused,
    naming the least that would do in the same unit, when a depth's budget cannot pay for the first
    rung and the least kept candidates to the end. `epoch_flops`: {block: training FLOPs of one of
    its model-epochs}, needed for a FLOP budget. A model-epoch budget is split evenly between the
    blocks; a FLOP budget in proportion to each block's grid FLOPs, so that every depth gets the same
    share of its own grid and a deep depth's budget pays for what its epochs cost. With --transfer
    (transfer_shares) `pools`, when given, is filled with each block's family pool."""
    grouped = grid_blocks(runs)
    seeds = min(len(s) for by_h in grouped.values() for s in by_h.values())
    if seeds < MIN_SEEDS:
        raise SpecError(f"--seeds: a search needs at least {MIN_SEEDS} seeds, got {seeds} (report recommends only an "
                        f"h with {MIN_SEEDS} completed runs; at level 0.95 a rung cuts a worse h only with 5 or more)")
    if options.early_seeds >= seeds:
        raise SpecError(f"--early-seeds: {options.early_seeds} must be fewer than the grid's {seeds} seeds (the rest "
                        f"join the h that reach the end)")
    grid_epochs = sum(spec.epochs for spec in runs)
    flop = options.budget_unit == FLOP
    weight = {key: epoch_flops[key] if flop else 1 for key in grouped}  # the unit's cost of one model-epoch
    grid = {key: weight[key] * sum(spec.epochs for specs in by_h.values() for spec in specs)
            for key, by_h in grouped.items()}
    total = sum(grid.values())
    budget = int(options.budget) if flop else budget_epochs(options, grid_epochs)
    shares = {key: budget * grid[key] // total if flop else budget // len(grouped) for key in grouped}
    if options.transfer:
        try:
            out = transfer_shares(grouped, shares, weight, options, budget)
            families = {key.with_(depth=0) for key in grouped}
            pool = {f: sum(shares[k] for k in grouped if k.with_(depth=0) == f) for f in families}
            (pools if pools is not None else {}).update({k: pool[k.with_(depth=0)] for k in grouped})
            return grid_epochs, budget, out
        except BudgetShort as short:
            if options.budget_given:
                raise
            # --transfer's default cannot pay for this grid: the least budget that does.
            given = make_options({"budget": short.least})
            return check_budget(runs, replace(options, budget=given.budget, budget_unit=given.budget_unit,
                                              budget_given=True), epoch_flops, pools)
    for key, by_h in grouped.items():
        least = weight[key] * least_of(key, by_h, options)
        if least <= shares[key]:
            continue
        first, start = rungs_for(options, key.epochs, key.milestones)[0], len(coarse(list(by_h), options.stride))
        what = f"rung (epoch {first}) and {least_kept(start, options.keep)} h values to the end ({least:,}"
        if flop:  # the least budget whose every block's share pays its least
            need = max(-(-weight[k] * least_of(k, by, options) * total // grid[k]) for k, by in grouped.items())
            raise SpecError(f"--budget: {shares[key]:,} FLOPs for depth {key.depth} cannot pay for the first {what} "
                            f"FLOPs); give at least --budget {round_up(need)}flop")
        need = math.ceil(least * len(grouped) / grid_epochs * 1000) / 1000
        raise SpecError(f"--budget: {shares[key]:,} model-epochs per depth cannot pay for the first {what}); "
                        f"give at least --budget {need:g} (or {least * len(grouped):,} model-epochs)")
    return grid_epochs, budget, shares


def transfer_shares(grouped: dict, shares: dict, weight: dict, options: SearchOptions, budget: int) -> dict:
    """--transfer: a family's shares (everything but depth) are one pool, spent shallowest first. Each
    deeper depth has its band's least reserved (band_least); the anchors share the rest evenly, and a
    deeper depth gets, when it starts, what the pool holds less what the depths after it reserve.
    Refused, naming the least budget that would do, when the anchors' part cannot pay their least."""
    from .transfer import anchors_of

    families: dict = {}
    for key in grouped:
        families.setdefault(key.with_(depth=0), []).append(key)
    out, need, short = {}, 0.0, False
    for members in families.values():
        pool = sum(shares[k] for k in members)
        anchors = anchors_of([k.depth for k in members], options.anchors)
        deep = [k for k in members if k.depth not in anchors]
        out.update({k: weight[k] * band_least(k, grouped[k], options) for k in deep})
        least = max(weight[k] * least_of(k, grouped[k], options) for k in members if k.depth in anchors)
        part = (pool - sum(out[k] for k in deep)) // len(anchors)
        for k in (k for k in members if k.depth in anchors):
            # At most what a search without --transfer would give it, the rest kept in the pool for
            # widening a deeper depth's band (but never less than its least).
            epochs = sum(spec.epochs for specs in grouped[k].values() for spec in specs)
            usual = weight[k] * math.floor(SearchOptions().budget * epochs)
            out[k] = min(part, max(least, usual))
        short = short or part < least
        need = max(need, (least * len(anchors) + sum(out[k] for k in deep)) * budget / max(pool, 1))
    if short:
        grid_epochs = sum(s.epochs for by_h in grouped.values() for specs in by_h.values() for s in specs)
        given = f"{round_up(math.ceil(need))}flop" if options.budget_unit == FLOP else \
            f"{math.ceil(need / grid_epochs * 1000) / 1000:g}"
        raise BudgetShort(given, f"--budget: with --transfer it cannot pay for the shallowest depths' first rung and "
                                 f"least kept h values to the end and every deeper depth's band; give at least "
                                 f"--budget {given}")
    return out


def band_least(key, by_h: dict, options: SearchOptions) -> int:
    """Model-epochs a deeper depth's band needs at least (--transfer): every value of a band of
    transfer.MIN_BAND to the first rung, one to the end."""
    from .transfer import MIN_BAND

    first = rungs_for(options, key.epochs, key.milestones)[0]
    n, seeds = min(MIN_BAND, sum(h > 0 for h in by_h)), len(next(iter(by_h.values())))
    k = options.early_seeds or seeds
    return k * n * first + k * (key.epochs - first) + (seeds - k) * key.epochs


def least_of(key, by_h: dict, options: SearchOptions) -> int:
    """Model-epochs a block needs at least: every coarse h to the first rung, the least kept to the end."""
    first = rungs_for(options, key.epochs, key.milestones)[0]
    start, seeds = len(coarse(list(by_h), options.stride)), len(next(iter(by_h.values())))
    k = options.early_seeds or seeds
    return k * start * first + least_kept(start, options.keep) * (k * (key.epochs - first) + (seeds - k) * key.epochs)


def round_up(number: int) -> str:
    """A whole number in 4 significant digits, rounded up (a budget named so still suffices)."""
    text = f"{number:.3e}"
    return text if float(text) >= number else f"{float(text) + 10 ** (len(str(number)) - 4):.3e}"


def budget_epochs(options: SearchOptions, grid_model_epochs: int) -> int:
    """The budget in model-epochs: a fraction of the grid's (<= 1) or a number of them."""
    if options.budget <= 1:
        return math.floor(options.budget * grid_model_epochs + TOL)
    return int(options.budget)


def _diverged(scores) -> int:
    return sum(1 for x in scores if math.isnan(x))


def median(scores) -> float:
    """The median over seeds; NaN when a seed diverged (NaN) or there are none."""
    return statistics.median(scores) if len(scores) and not _diverged(scores) else math.nan


def leader(pool: dict) -> float | None:
    """The h with the highest median among those with no diverged seed (ties: the smaller h)."""
    clean = [(median(s), h) for h, s in pool.items() if not _diverged(s)]
    if not clean:
        return None
    return min(clean, key=lambda mh: (-mh[0], mh[1]))[1]


def judge(h: float, pool: dict, options: SearchOptions) -> dict:
    """One h at a rung, against the rung's leader among all candidates that reached it: the
    verdict ("cut" or "keep"), why, and the evidence."""
    scores, best = pool[h], leader(pool)
    diverged = _diverged(scores)
    out = {"h": h, "median": median(scores), "seeds": len(scores), "diverged": diverged, "leader": best,
           "leader_median": None if best is None else median(pool[best]), "p": None, "margin": options.margin}
    if diverged:
        return {**out, "action": "cut", "why": "diverged"}
    if best is None or best == h:  # h values are the grid's own floats: compared exactly
        return {**out, "action": "keep", "why": "leader"}
    from .stats import p_worse  # scipy: loaded only once there is something to judge

    p = p_worse(pool[best], scores, options.margin)
    out["p"] = None if math.isnan(p) else p
    if not math.isnan(p) and p <= 1 - options.level + TOL:
        return {**out, "action": "cut", "why": "worse"}
    return {**out, "action": "keep", "why": "not shown worse"}


def keep_least(verdicts: list[dict], alive_elsewhere: int, least: int) -> list[dict]:
    """Bring back the least-bad h cut as "worse" until `least` are alive (diverged stay cut)."""
    alive = alive_elsewhere + sum(v["action"] == "keep" for v in verdicts)
    worse = sorted((v for v in verdicts if v["why"] == "worse"), key=lambda v: (-v["median"], v["h"]))
    back = {v["h"] for v in worse[:max(0, least - alive)]}
    return [{**v, "action": "keep", "why": "minimum kept"} if v["h"] in back else v for v in verdicts]


def refinements(grid: list[float], tried: list[float], best: float, skipped: tuple = ()) -> list[float]:
    """Grid values between `best` and its nearest tried neighbour on each side, the one closest to
    their log-midpoint (ties: the smaller h); none where the grid has nothing in between, or where
    that value was already `skipped` (proposed once, and the budget could not pay for it)."""
    out = []
    below = [h for h in tried if h < best]
    above = [h for h in tried if h > best]
    for neighbour in ([max(below)] if below else []) + ([min(above)] if above else []):
        lo, hi = sorted((best, neighbour))
        inside = [h for h in grid if lo < h < hi and h not in tried]
        if inside:
            mid = math.log(lo * hi) / 2 if lo > 0 else math.log(hi)
            # Distances rounded, so that 0.2 and 0.5 around sqrt(0.1) tie exactly (and the smaller wins).
            out.append(min(inside, key=lambda h: (round(abs(math.log(h) - mid), 9) if h > 0 else math.inf, h)))
    return [h for h in out if h not in skipped]


def pause_for_budget(ranked: list[tuple[float, int, int]], spare: int, least: int) -> tuple[list[float], list[float]]:
    """Which candidates train on to their next rung, best first: the longest prefix of `ranked`
    ((h, cost to the next rung, cost from there to the end), best first) whose next segments, plus
    the rest of the way for its best `least`, fit in `spare`. So the budget always holds the way to
    the end for `least` of them, and the others are paused at the latest rung that must pause them,
    where the ranking knows the most. Returns (carried, paused)."""
    k, total = 0, 0
    for i, (_, segment, rest) in enumerate(ranked):
        if total + segment + (rest if i < least else 0) > spare:
            break
        total += segment + (rest if i < least else 0)
        k = i + 1
    return [h for h, _, _ in ranked[:k]], [h for h, _, _ in ranked[k:]]
