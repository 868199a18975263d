"""`robustres search`: halving.py's rules run over the store, round by round, until every depth has
its answer.

A round: refine blocks with nothing left in training, pause what the budget cannot carry, train
every live candidate to its next rung (the runs stop there, checkpointed, status `running`), then
judge each one at that rung from the scores the store holds. Cut and paused runs get status
`stopped`. The state file `searches/<id>.json` records the decisions after every round.

Resuming is replaying: the same command runs the same rounds, and a round whose runs already reached
their rung trains nothing (execution/session.reached_stop). Decisions read only stored epoch rows at rung
epochs, which training reproduces bitwise on the CPU, so a search killed at any moment ends with
the same decisions and the same answer. Two searches sharing a store share runs through the
executors' claims, like two sweeps.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from . import halving as H
from . import transfer as T
from .datasets import residual_blocks
from .search_answer import answer, cost_of
from .search_state import read_state, same_start, write_state
from .spec import AXES, Execution, RunSpec
from .store import Store

Train = Callable[[list[RunSpec], Execution], list[dict]]  # the runs -> their store rows, in order
OnRound = Callable[[list[dict]], None]  # the decisions of a round, as they are made


class SearchFailed(Exception):
    """A run of the search failed: the search cannot judge its h (running it again retries)."""


@dataclass
class Candidate:
    h: float
    origin: str  # coarse | refine
    epoch: int = 0  # the rung its runs reached
    # live | done (reached the end) | cut | paused | skipped (a refinement, no budget) | more (--early-seeds:
    # reached the end on the first seeds; its other seeds train to the end before it is judged there)
    state: str = "live"
    verdict: dict | None = None  # its last rung's judgement (a pause carries its evidence)
    full: bool = True  # all its seeds are trained (False: --early-seeds, only the first ones so far)


@dataclass
class Block:
    """One search: a depth (and training-noise level), its h grid and its candidates."""

    depth: int
    train_noise: float
    runs: dict[float, list[RunSpec]]  # h -> its runs, one per seed, by seed
    epochs: int
    rungs: tuple[int, ...]
    budget: int  # what this block may spend, in the budget's unit (model-epochs or FLOPs)
    least: int  # candidates always kept alive
    unit_cost: int = 1  # one model-epoch in the budget's unit: 1, or its training FLOPs for a FLOP budget
    epoch_flops: int = 0  # training FLOPs of one model-epoch (for the cost shown, whatever the unit)
    candidates: dict[float, Candidate] = field(default_factory=dict)
    rows: dict[tuple[float, int], dict] = field(default_factory=dict)  # (h, seed) -> its latest store row
    axes: dict = field(default_factory=dict)  # the other sweep axes that vary between blocks: {"lr": 0.2}
    family: RunSpec | None = None  # --transfer: its block spec but depth (None: searched whole from the start)
    blocks: int = 0  # L, its network's residual blocks
    rule: str = "fixed"
    waiting: bool = False  # --transfer: a deeper depth whose shallower ones have not all settled
    band: list[float] | None = None  # --transfer: the values it started from
    pool: int = 0  # --transfer: its family's budget, spent shallowest depth first (H.transfer_shares)
    early: int = 0  # --early-seeds: the seeds its rungs compare (0: all)

    @property
    def seeds(self) -> int:
        return len(next(iter(self.runs.values())))

    @property
    def k(self) -> int:
        """The seeds a rung compares: the first k of every h (the same seeds for every h)."""
        return self.early or self.seeds

    def fresh(self, h: float, origin: str, state: str = "live") -> Candidate:
        return Candidate(h, origin, state=state, full=self.k == self.seeds)

    def to_end(self, epoch: int) -> int:
        """Model-epochs from `epoch` (on the first k seeds) to an answer: the first k seeds to the end,
        then the others from the start."""
        return self.k * (self.epochs - epoch) + (self.seeds - self.k) * self.epochs

    def tag(self) -> dict:
        return {"depth": self.depth, "train_noise": self.train_noise, **({"axes": self.axes} if self.axes else {})}

    def spent(self) -> int:
        """Model-epochs its runs took (a diverged run up to its divergence)."""
        total = 0
        for c in self.candidates.values():
            for i, spec in enumerate(self.runs[c.h]):
                reached = c.epoch if i < self.k else self.epochs if c.full else 0
                row = self.rows.get((c.h, spec.seed)) or {}
                stop = row.get("diverged_epoch") if row.get("status") == "diverged" else None
                total += min(reached, int(stop)) if stop is not None and not pd.isna(stop) else reached
        return total

    def charged(self) -> int:
        """What its runs took, in the budget's unit."""
        return self.spent() * self.unit_cost

    def grid_epochs(self) -> int:
        return sum(spec.epochs for specs in self.runs.values() for spec in specs)


@dataclass
class SearchResult:
    search_id: str
    recommendations: list[dict]
    groups: pd.DataFrame  # report.aggregate + labels, over the search's runs
    decisions: list[dict]
    model_epochs: int
    grid_model_epochs: int
    budget_model_epochs: int
    warnings: list[str]
    cost: dict = field(default_factory=dict)  # spent, grid's and budget in model-epochs and FLOPs (cost_of)


# ---------------------------------------------------------------------------------------------
# Planning: blocks, budget, identity
# ---------------------------------------------------------------------------------------------


def epoch_flops(spec: RunSpec) -> int:
    """Training FLOPs of one model-epoch of a run: 3x its model's forward multiply-adds per example
    (the engine counts them, as the planner does) times its training examples, on its family's
    input shape and classes (known before the data is read)."""
    from .datasets import family_of, train_examples
    from .execution.plan import flops_per_image

    family = family_of(spec.dataset, spec.synthetic_like)
    return 3 * int(flops_per_image(spec, family.input_shape, family.classes)) * train_examples(spec)


def block_flops(runs: list[RunSpec]) -> dict[RunSpec, int]:
    """{block: training FLOPs of one of its model-epochs} (H.grid_blocks' keys)."""
    return {key: epoch_flops(next(iter(by_h.values()))[0]) for key, by_h in H.grid_blocks(runs).items()}


def make_blocks(runs: list[RunSpec], options: H.SearchOptions) -> tuple[list[Block], int, int]:
    """The blocks of a grid's runs, with their coarse candidates; (blocks, grid's model-epochs,
    budget in its unit). A budget too small is refused first (H.check_budget)."""
    flops = block_flops(runs)
    pools: dict = {}
    grid_epochs, budget, shares = H.check_budget(runs, options, flops, pools)
    grouped = H.grid_blocks(runs)
    varying = [f.name for f in AXES if f.name not in ("depth", "h", "seed", "train_noise")
               and len({getattr(key, f.name) for key in grouped}) > 1]
    blocks = []
    for key, by_h in grouped.items():
        start = H.coarse(list(by_h), options.stride)
        block = Block(key.depth, key.train_noise, {h: sorted(s, key=lambda r: r.seed) for h, s in sorted(by_h.items())},
                      key.epochs, H.rungs_for(options, key.epochs, key.milestones), shares[key],
                      H.least_kept(len(start), options.keep), flops[key] if options.budget_unit == H.FLOP else 1,
                      flops[key])
        block.early = options.early_seeds
        block.candidates = {h: block.fresh(h, "coarse") for h in start}
        block.axes = {name: getattr(key, name) for name in varying}
        block.blocks, block.rule = residual_blocks(key.model, key.depth), key.h_rule or "fixed"
        block.family, block.pool = (key.with_(depth=0), pools[key]) if options.transfer else (None, 0)
        blocks.append(block)
    for family in {b.family for b in blocks if b.family is not None}:
        members = [b for b in blocks if b.family == family]
        anchors = T.anchors_of([b.depth for b in members], options.anchors)
        for b in members:
            if b.depth not in anchors:
                b.waiting, b.candidates = True, {}
    return blocks, grid_epochs, budget


def search_id(runs: list[RunSpec], options: H.SearchOptions) -> str:
    payload = json.dumps({"runs": sorted(s.run_id for s in runs), "options": options.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Scores from the store
# ---------------------------------------------------------------------------------------------


def scores_at(block: Block, store: Store, h: float, epoch: int, n: int = 0) -> np.ndarray:
    """Test accuracy of h's first `n` runs (0: the k a rung compares) at `epoch`, seed by seed; NaN
    where a run diverged by then, or by the epoch the search has taken h to (a candidate known to
    diverge later never leads a rung). Both are part of the replayed state, so a resumed search sees
    the same."""
    out = []
    horizon = max(epoch, block.candidates[h].epoch)
    for spec in block.runs[h][:n or block.k]:
        row = block.rows[(h, spec.seed)]
        if row["status"] == "diverged" and int(row["diverged_epoch"]) <= horizon:
            out.append(math.nan)
            continue
        if row["status"] == "failed":
            raise SearchFailed(f"run {row['run_id']} (depth {block.depth}, h={h:g}, seed {spec.seed}) failed: "
                               f"{row.get('error') or 'see the store'}; run the search again to retry it")
        epochs = store.epochs(row["run_id"])
        at = epochs[epochs.epoch == epoch]
        if at.empty:
            raise SearchFailed(f"run {row['run_id']} has no epoch {epoch} in the store; run the search again")
        out.append(float(at.test_acc.iloc[0]))
    return np.array(out)


def pool_at(block: Block, store: Store, epoch: int, n: int = 0) -> dict[float, np.ndarray]:
    """Every candidate whose runs reached `epoch`, with its first `n` seeds' scores there (0: the k a
    rung compares; more: only candidates with all their seeds trained)."""
    n = n or block.k
    return {h: scores_at(block, store, h, epoch, n) for h, c in block.candidates.items()
            if c.epoch >= epoch and (c.full or n <= block.k)}


def stop_runs(block: Block, store: Store, h: float) -> None:
    """A cut or paused candidate's runs: status `stopped`, each only if the store still has it
    `running` at the search's rung (another process may have taken it on), checked again under its
    claim. A replay finds nothing to flip and writes nothing."""
    from .claims import Claims

    def waiting(row: dict | None) -> bool:
        current = store.get_run(row["run_id"]) if row is not None else None
        return current is not None and current["status"] == "running" and \
            int(current.get("epochs_done") or 0) == block.candidates[h].epoch

    keys = [(h, spec.seed) for spec in block.runs[h] if waiting(block.rows.get((h, spec.seed)))]
    if not keys:
        return
    with Claims(store) as claims:
        mine, _ = claims.take([block.rows[k]["run_id"] for k in keys])
        for key in keys:
            run_id = block.rows[key]["run_id"]
            if run_id in mine and waiting(block.rows[key]):
                store.put_run({**store.get_run(run_id), "status": "stopped"})
                block.rows[key] = store.get_run(run_id)


# ---------------------------------------------------------------------------------------------
# A round's three steps: refine, pause for the budget, judge at the rung
# ---------------------------------------------------------------------------------------------


def unit(block: Block) -> str:
    return "model-epochs" if block.unit_cost == 1 else "FLOPs"


def live(block: Block) -> list[Candidate]:
    return [c for c in block.candidates.values() if c.state == "live"]


def busy(block: Block) -> bool:
    """Something of it is still in training (live, or waiting for its other seeds)."""
    return any(c.state in ("live", "more") for c in block.candidates.values())


def join(block: Block, hs: list[float], origin: str, why: str, extra: dict | None = None) -> list[dict]:
    """Candidates that join from epoch 0, each only if the budget can carry it to the end; one it
    cannot is remembered as skipped (tried), so that it is proposed once."""
    decisions, spare = [], block.budget - block.charged()
    for h in hs:
        cost = block.seeds * block.epochs * block.unit_cost
        joins = cost <= spare
        spare -= cost if joins else 0
        block.candidates[h] = block.fresh(h, origin, "live" if joins else "skipped")
        decisions.append({**block.tag(), "epoch": 0, "h": h, "action": "add" if joins else "skip", "origin": origin,
                          "why": why + ("" if joins else f"; the budget's {spare:,} {unit(block)} left cannot pay "
                                                         f"its {cost:,}"), **(extra or {})})
    return decisions


def refine(block: Block, store: Store, blocks: list[Block] = ()) -> list[dict]:
    """With nothing left in training: grid values between the best finished h and its tried
    neighbours join from epoch 0, if the budget can carry each one to the end. A band (--transfer)
    first widens where its best is an edge or all of it diverged (transfer.widening)."""
    if busy(block) or block.waiting:
        return []
    pool = {h: s for h, s in pool_at(block, store, block.epochs, block.seeds).items()
            if block.candidates[h].state == "done"}
    best = H.leader(pool)
    tried = [h for h, c in block.candidates.items() if c.state != "skipped"]
    skipped = tuple(h for h, c in block.candidates.items() if c.state == "skipped")
    if block.band is not None and tried:
        diverged = all((c.verdict or {}).get("why") == "diverged" for c in block.candidates.values() if c.h in tried)
        wider = [h for h in T.widening(list(block.runs), tried, best, diverged) if h not in skipped]
        if wider:
            why = ("widen: every h of the band diverged" if diverged else
                   f"widen: the best h={best:g} is the edge of the h tried")
            block.budget = max(block.budget, unspent(block, blocks))
            return join(block, wider, "widen", why)
    if best is None:
        return []
    return join(block, H.refinements(list(block.runs), tried, best, skipped), "refine",
                f"refine: between the best h={best:g} and its neighbour")


def unspent(block: Block, blocks: list[Block]) -> int:
    """--transfer: what its family's pool holds for it now: less what the other depths spent
    (settled ones spend no more) or reserve (those still waiting). What a shallower depth left is
    what a deeper one widens with."""
    family = [b for b in blocks if b.family == block.family and b is not block]
    return block.pool - sum(b.budget if b.waiting else b.charged() for b in family)


def settled(block: Block) -> bool:
    return not block.waiting and not busy(block)


def start_bands(blocks: list[Block], store: Store, options: H.SearchOptions) -> list[dict]:
    """--transfer: each waiting depth whose shallower depths (same family) have all settled starts
    from the band their answers predict (transfer.py), or from the coarse grid when none has one."""
    decisions = []
    for block in sorted((b for b in blocks if b.waiting), key=lambda b: b.depth):
        shallower = [b for b in blocks if b.family == block.family and b.depth < block.depth]
        if not all(settled(b) for b in shallower):
            continue
        known = settled_answers(shallower, store)
        block.waiting = False
        if not known:
            start = H.coarse(list(block.runs), options.stride)
            decisions += join(block, start, "coarse", "transfer: no shallower depth has an answer with h > 0; "
                                                      "the search starts from the coarse grid")
            continue
        prediction = T.predict(known, block.blocks, block.rule, options.level)
        block.band = T.band(list(block.runs), prediction, options.widen)
        block.least = 1  # the band is the prediction's evidence: one h with all seeds to the end suffices
        decisions += start_band(block, prediction, options.widen)
    return decisions


def start_band(block: Block, prediction: dict, widen: float) -> list[dict]:
    """The band's values join, nearest the prediction first, while the budget pays for all of them to
    the first rung and the least kept to the end (as the coarse start is checked); the rest are skipped."""
    centre, first = math.log(prediction["h"]), block.rungs[0]
    order = sorted(block.band, key=lambda h: (round(abs(math.log(h) - centre), 9), h))
    spare, taken = block.budget - block.charged(), []
    for h in order:
        n = len(taken) + 1
        if block.unit_cost * (n * block.k * first + min(n, block.least) * block.to_end(first)) <= spare:
            taken.append(h)
    why, extra = T.band_text(prediction, block.band, widen), {"prediction": prediction, "band": block.band}
    decisions = []
    for h in block.band:
        block.candidates[h] = block.fresh(h, "band", "live" if h in taken else "skipped")
        decisions.append({**block.tag(), "epoch": 0, "h": h, "action": "add" if h in taken else "skip",
                          "origin": "band", **extra, "why": why if h in taken else
                          why + f"; the budget's {spare:,} {unit(block)} cannot take it to the first rung too"})
    return decisions


def settled_answers(shallower: list[Block], store: Store) -> list[T.Settled]:
    """The settled depths' answers (report's, over the search's runs): each one's set and scores."""
    from .report import METRICS

    _, recs, _ = answer(shallower, store)
    known = []
    for rec in recs:
        block = next(b for b in shallower if b.depth == rec["depth"])
        hs = sorted(h for h in (rec["indistinguishable"] or []) if h > 0) if rec["h"] is not None else []
        if not hs:
            continue
        matrix = np.array([[float(block.rows[(h, s.seed)].get(METRICS["final"]) or math.nan)
                            if block.rows[(h, s.seed)]["status"] == "completed" else math.nan
                            for s in block.runs[h]] for h in hs])
        matrix = matrix[:, ~np.isnan(matrix).any(axis=0)]  # the seeds every h of the set has
        if matrix.shape[1]:
            known.append(T.Settled(block.depth, block.blocks, tuple(hs), matrix))
    return sorted(known, key=lambda k: k.depth)


def pause(block: Block, store: Store) -> list[dict]:
    """Carry the candidates past a rung on to their next one, best first, while the budget still
    holds the way to the end for the least kept of them (H.pause_for_budget); pause the others."""
    started = [c for c in live(block) if c.epoch > 0]
    fresh = [c for c in live(block) if c.epoch == 0]
    more = [c for c in block.candidates.values() if c.state == "more"]  # their other seeds, to the end
    spare = block.budget - block.charged() - block.unit_cost * (
        len(fresh) * block.k * block.rungs[0] + len(more) * (block.seeds - block.k) * block.epochs)
    ranked = []
    for c in started:
        scores = scores_at(block, store, c.h, c.epoch)
        step = next_rung(block, c)
        ranked.append((H.median(scores), c.h, block.k * (step - c.epoch) * block.unit_cost,
                       block.to_end(step) * block.unit_cost))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    _, paused = H.pause_for_budget([(h, seg, rest) for _, h, seg, rest in ranked], spare, block.least)
    decisions = []
    for h in paused:
        c = block.candidates[h]
        c.state = "paused"
        stop_runs(block, store, h)
        shown = "kept only as the minimum" if (c.verdict or {}).get("why") == "minimum kept" else "not shown worse"
        decisions.append({**block.tag(), **(c.verdict or {}), "epoch": c.epoch, "h": h, "action": "pause",
                          "origin": c.origin, "why": f"budget: {shown}, but carrying it on would leave too "
                                                     f"little to take the best {block.least} to the end"})
    return decisions


def judge(block: Block, store: Store, options: H.SearchOptions, trained: list[Candidate]) -> list[dict]:
    """The candidates that just reached a rung, judged there against every candidate that reached it."""
    decisions = []
    # At the end, --early-seeds: the first k seeds judged among the first k of all; all seeds among all.
    for epoch, n in sorted({(c.epoch, block.seeds if c.full and c.epoch >= block.epochs else block.k)
                            for c in trained}):
        here = [c for c in trained if c.epoch == epoch and (block.seeds if c.full and epoch >= block.epochs
                                                           else block.k) == n]
        pool = pool_at(block, store, epoch, n)
        verdicts = [H.judge(c.h, pool, options) for c in here]
        others = sum(c.state in ("live", "done", "more") for c in block.candidates.values() if c not in here)
        for c, verdict in zip(here, H.keep_least(verdicts, others, block.least)):
            if epoch >= block.epochs and not c.full and verdict["why"] != "diverged":
                c.state, verdict = "more", {**verdict, "action": "more",
                                            "why_kept": verdict["why"], "why": "seeds"}
            elif epoch >= block.epochs:  # at the end nothing is cut: the runs are finished, report judges them
                c.state, verdict = "done", {**verdict, "action": "end"}
            elif verdict["action"] == "cut":
                c.state = "cut"
                stop_runs(block, store, c.h)
            c.verdict = verdict
            decisions.append({**block.tag(), "epoch": epoch, **verdict, "origin": c.origin})
    return decisions


# ---------------------------------------------------------------------------------------------
# The search, round by round
# ---------------------------------------------------------------------------------------------


def next_rung(block: Block, c: Candidate) -> int:
    return next(r for r in block.rungs if r > c.epoch)


def train_round(blocks: list[Block], execution: Execution, train: Train) -> list[tuple[Block, Candidate]]:
    """Every live candidate to its next rung: one training call per target epoch, all depths in it."""
    targets: dict[int, list[tuple[Block, Candidate]]] = {}
    for block in blocks:
        for c in live(block):
            targets.setdefault(next_rung(block, c), []).append((block, c))
        for c in (c for c in block.candidates.values() if c.state == "more"):  # its other seeds, to the end
            targets.setdefault(block.epochs, []).append((block, c))
    for epoch, members in sorted(targets.items()):
        owned = [(block, spec) for block, c in members
                 for spec in (block.runs[c.h][block.k:] if c.state == "more" else block.runs[c.h][:block.k])]
        rows = train([spec for _, spec in owned], replace(execution, stop_at=epoch))
        for (block, spec), row in zip(owned, rows):
            block.rows[(spec.h, spec.seed)] = row
        for _, c in members:
            c.epoch = epoch
            if c.state == "more":
                c.state, c.full = "live", True
    return [m for members in targets.values() for m in members]


def run_search(runs: list[RunSpec], options: H.SearchOptions, execution: Execution, train: Train,
               on_round: OnRound | None = None) -> SearchResult:
    """Search h per depth over the grid `runs`, within the budget; every decision made, and the answer."""
    blocks, grid_epochs, budget = make_blocks(runs, options)
    store, ident = Store(execution.store), search_id(runs, options)
    previous = read_state(store, ident)
    decisions: list[dict] = []
    while True:
        made = [d for b in blocks for d in refine(b, store, blocks)]
        made += start_bands(blocks, store, options) if options.transfer else []
        made += [d for b in blocks for d in pause(b, store)]
        trained = train_round(blocks, execution, train)
        if not trained and not made:
            break
        for block in blocks:
            made += judge(block, store, options, [c for b, c in trained if b is block])
        decisions += made
        write_state(store, ident, options, decisions, sum(b.spent() for b in blocks), False)
        if on_round is not None and made:
            on_round(made)
    spent = sum(b.spent() for b in blocks)
    write_state(store, ident, options, decisions, spent, True)
    warnings = [] if previous is None or same_start(previous, decisions) else [
        f"search {ident}: its decisions differ from those an earlier run of it stored (the store's runs changed)"]
    groups, recs, more = answer(blocks, store)
    cost = cost_of(blocks, options, budget)
    return SearchResult(ident, recs, groups, decisions, spent, grid_epochs, cost["model_epochs"]["budget"],
                        warnings + more, cost)
