"""The stable region: how large a learning rate (momentum, weight decay, batch size) each h
tolerates at each depth, and what that says about the paper's claim that a small h "is also robust
to larger learning rates" (Section 4.1).

Along each ordered axis that varies among the selected runs (ORDERED), per (dataset, depth,
training noise, the other axes' values) and h, over report's groups:

- `first_unstable`: the smallest value of the axis at which a finished run diverged (null: none did).
- `edge`: the largest value below `first_unstable` (null: the smallest value tested already
  diverged; when nothing diverged, the largest value tested: the region reaches the grid's end).
- The divergence rate at both (diverged of finished runs) with its Wilson interval at the report's
  level: the groups' own `diverged_low`/`diverged_high` (stats.rate_interval, scipy's binomtest).
Only finished runs count: a failed run crashed (it says nothing about stability), a running or
stopped one has not finished; a value without a finished run is left out.

The claim per depth, "the edge grows as h shrinks", is judged by this rule (why, for each part):

- Neighbouring h only (in h order): the claim is monotone, so a reversal between any two
  neighbours contradicts it and growth between any two supports it; comparing all pairs would
  count the same runs several times.
- A pair is judged where the two h disagree, at one value of the axis, the contested value: for
  growth, where the larger h starts to diverge while the smaller h has not yet; for a reversal,
  the other way round. Edges compared as numbers would read one divergence in three seeds as a
  fact; the runs at the contested value say whether the two h can be told apart there.
- Told apart means non-overlapping Wilson intervals of the two divergence rates (touching ones
  overlap), as the recommendation treats accuracies. With 3 seeds even 0/3 against 3/3 overlaps at
  95 % (0-56 % and 44-100 %): 4 seeds per cell, or `--level 0.9`, separate them.
- The verdict: `no` when some neighbouring pair is told apart against the claim; else `yes` when
  some pair is told apart in its favour; else `not resolved by this grid` (too few seeds per cell,
  or both h start to diverge at the same grid value, so the grid cannot say whose edge is larger).
  The sentence names every pair with its counts and intervals, so a `yes` hides no unresolved pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from .stats import level_label, rate_interval

# Axes along which a larger value is a harder test of stability (the paper's "larger learning rates";
# momentum, weight decay and batch size change the effective step the same way).
ORDERED = ("lr", "momentum", "weight_decay", "batch_size")
# Axes whose values are kinds, not amounts: the figures put them side by side, one panel per value.
CATEGORICAL = ("optimizer", "bn")
VERDICTS = ("yes", "no", "not resolved by this grid")


def axes_text(axes: dict) -> str:
    """The extra axes as headings name them: `lr=0.2, optimizer=sgd, bn=off`."""
    def value(v):
        if isinstance(v, bool):
            return "on" if v else "off"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={value(v)}" for k, v in axes.items())


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class Cell:
    """The finished runs of one (h, axis value): k of n diverged, the Wilson interval of the rate."""

    diverged: int
    finished: int
    low: float
    high: float

    def counts(self) -> dict:
        return {"diverged": self.diverged, "finished": self.finished}

    def as_json(self) -> dict:
        return {**self.counts(), "rate": [self.low, self.high]}

    def text(self) -> str:
        return f"{self.diverged}/{self.finished} ({100 * self.low:.0f}-{100 * self.high:.0f} %)"


def varying_axes(groups, names: tuple[str, ...]) -> list[str]:
    """The axes of `names` that some group of report's table carries (they vary among its runs)."""
    seen = set().union(*groups["axes"]) if "axes" in groups and len(groups) else set()
    return [a for a in names if a in seen]


def slices(groups, axis: str) -> dict[tuple, dict[float, dict]]:
    """Per (dataset, depth, train_noise, other axes as a tuple of pairs): per h, per value of `axis`,
    its Cell (values without a finished run left out)."""
    out: dict[tuple, dict[float, dict]] = {}
    for row in groups.itertuples():
        value = row.axes.get(axis)
        finished = int(row.completed + row.diverged)
        if value is None or finished == 0:
            continue
        rest = tuple((k, v) for k, v in row.axes.items() if k != axis)
        cells = out.setdefault((row.dataset, int(row.depth), float(row.train_noise), rest), {})
        cells.setdefault(float(row.h), {})[value] = Cell(int(row.diverged), finished, float(row.diverged_low),
                                                         float(row.diverged_high))
    return out


def edge_of(cells: dict) -> tuple[object, object]:
    """(edge, first_unstable) of one h's cells along the axis."""
    values = sorted(cells)
    first = next((v for v in values if cells[v].diverged > 0), None)
    below = [v for v in values if first is None or v < first]
    return (below[-1] if below else None), first


def edges(groups) -> list[dict]:
    """report JSON's `edges`: one per (dataset, depth, training noise, other axes, h, ordered axis)."""
    out = []
    for axis in varying_axes(groups, ORDERED):
        for (dataset, depth, noise, rest), by_h in slices(groups, axis).items():
            for h in sorted(by_h):
                cells = by_h[h]
                edge, first = edge_of(cells)
                out.append({"dataset": dataset, "depth": depth, "train_noise": noise, "h": h, "axis": axis,
                            "axes": dict(rest), "edge": edge, "first_unstable": first,
                            "rate_at_edge": None if edge is None else [cells[edge].low, cells[edge].high],
                            "rate_at_first_unstable": None if first is None else [cells[first].low,
                                                                                  cells[first].high],
                            "runs_at_edge": None if edge is None else cells[edge].counts(),
                            "runs_at_first_unstable": None if first is None else cells[first].counts()})
    return out


def judge_pair(small: dict, large: dict) -> tuple[object, str]:
    """(contested value, result) for neighbouring h: `small` the smaller h's cells, `large` the larger's.
    Results: grows (told apart in the claim's favour), shrinks (told apart against it), not separated."""
    first_small, first_large = edge_of(small)[1], edge_of(large)[1]
    if first_large is not None and (first_small is None or first_small > first_large):
        at = first_large  # the larger h diverges here, the smaller h not yet
        if at in small:
            return at, "grows" if small[at].high < large[at].low else "not separated"
        return at, "not separated"
    if first_small is not None and (first_large is None or first_large > first_small):
        at = first_small  # the smaller h diverges here, the larger h not yet
        if at in large:
            return at, "shrinks" if large[at].high < small[at].low else "not separated"
        return at, "not separated"
    return first_small, "not separated"  # the same onset, or none at all


def verdicts(groups) -> list[dict]:
    """report JSON's `edge_verdicts`: per (dataset, depth, training noise, other axes, ordered axis)
    the verdict on "the edge grows as h shrinks", the pairs it rests on, and one sentence."""
    level = level_label(float(groups.level.iloc[0])) if len(groups) else ""
    out = []
    for axis in varying_axes(groups, ORDERED):
        for (dataset, depth, noise, rest), by_h in slices(groups, axis).items():
            hs = sorted(by_h)
            pairs = []
            for small, large in zip(hs, hs[1:]):
                at, result = judge_pair(by_h[small], by_h[large])
                cell = lambda h: by_h[h].get(at) if at is not None else None  # noqa: E731
                pairs.append({"smaller_h": small, "larger_h": large, "at": at, "result": result,
                              "smaller": None if cell(small) is None else cell(small).as_json(),
                              "larger": None if cell(large) is None else cell(large).as_json()})
            results = {p["result"] for p in pairs}
            verdict = "no" if "shrinks" in results else "yes" if "grows" in results else VERDICTS[2]
            entry = {"dataset": dataset, "depth": depth, "train_noise": noise, "axis": axis, "axes": dict(rest),
                     "verdict": verdict, "pairs": pairs}
            entry["text"] = sentence(entry, by_h, level) + _seeds_hint(pairs, float(groups.level.iloc[0]))
            out.append(entry)
    return out


def _seeds_hint(pairs: list[dict], level: float) -> str:
    """When a pair could not be told apart however its runs had come out (0/n against n/n still
    overlap at this level), say so: more runs per cell, not a finer grid, would resolve it."""
    sizes = {min(p["smaller"]["finished"], p["larger"]["finished"]) for p in pairs
             if p["result"] == "not separated" and p["smaller"] and p["larger"]}
    short = sorted(n for n in sizes if rate_interval(0, n, level)[2] >= rate_interval(n, n, level)[1])
    if not short:
        return ""
    return (f" With {short[0]} finished runs per cell even 0/{short[0]} and {short[0]}/{short[0]} overlap at "
            f"{level_label(level)} %: more seeds (or a lower --level) would resolve it.")


def _edge_text(axis: str, cells: dict) -> str:
    edge, first = edge_of(cells)
    if edge is None:
        return f"none (diverged from {axis}={_num(first)}, the smallest tested)"
    return f"{axis}<={_num(edge)}" + (" (none diverged)" if first is None else "")


def _pair_text(axis: str, p: dict, by_h: dict) -> str:
    names = f"h={p['larger_h']:g} -> {p['smaller_h']:g}"
    if p["at"] is None:
        return f"{names}: neither diverged"
    large, small = by_h[p["larger_h"]].get(p["at"]), by_h[p["smaller_h"]].get(p["at"])
    if large is None or small is None:
        return f"{names}: {axis}={_num(p['at'])} not tested at h={p['larger_h' if large is None else 'smaller_h']:g}"
    if edge_of(by_h[p["larger_h"]])[1] == edge_of(by_h[p["smaller_h"]])[1]:
        return (f"{names} both start to diverge at {axis}={_num(p['at'])}: {large.text()} vs {small.text()}, "
                "so the grid cannot say whose edge is larger")
    how = {"grows": "told apart", "shrinks": "told apart, against the claim", "not separated": "not told apart"}
    return (f"{names} {how[p['result']]} at {axis}={_num(p['at'])}: diverged {large.text()} vs "
            f"{small.text()}")


def sentence(entry: dict, by_h: dict, level: str) -> str:
    """The verdict in one sentence with its numbers (largest h first, as "h shrinks" reads)."""
    axis = entry["axis"]
    where = f"{entry['dataset']}, depth {entry['depth']}" + (
        f", training noise {entry['train_noise']:g}" if entry["train_noise"] else "") + (
        f", {axes_text(entry['axes'])}" if entry["axes"] else "")
    edges_text = ", ".join(f"h={h:g}: {_edge_text(axis, by_h[h])}" for h in sorted(by_h, reverse=True))
    pairs = "; ".join(_pair_text(axis, p, by_h) for p in reversed(entry["pairs"])) or "one h only"
    return (f"{where}: does the {axis} edge grow as h shrinks? {entry['verdict']}. Edges: {edges_text}; "
            f"{pairs} (divergence rates, {level} % Wilson intervals).")
