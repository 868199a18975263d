"""Training of a pack: K runs of one architecture and schedule, trained together.

A pack is executed as one or more *units*. A unit is one network holding some of the pack's models
fused along the channel axis (grouped convolutions, per-model h, see models.py) with one optimizer;
`fuse=True` makes the whole pack one unit, `fuse=False` makes every model its own unit, stepped in
turn. Both compute the same thing: each model sees its own minibatch, its own augmentation and
noise, and gets the gradient of its own loss. Which one is faster depends on the device, so by
default a rule per device and model decides (tuning.FUSE_RULES, from measurements).

Every random choice is a hash of (seed, epoch, step, ...), see transforms.py, and every model is
initialised from its own seed; so a run sees the same data, noise and initial weights alone or in
any pack. Its arithmetic is the same only to float rounding: the kernels of a fused pack (grouped
convolutions, batched products) sum in orders that depend on how many models it holds, and over
many epochs those roundings grow into visible differences (a third decimal of accuracy). So the
planner cuts packs from the whole request, never from what is left of it (plan.make_packs), and a
pack's checkpoints are saved all or nothing (checkpoints.save_pack): resuming from an end-of-epoch
checkpoint continues exactly as an uninterrupted run would (bitwise on the CPU).

A model whose loss becomes non-finite is *diverged*: its loss is masked out of the sum at once (on
the device, no synchronisation), and at the end of the epoch its slices are zeroed and frozen.
Nothing crosses between models, so its NaNs never reach its pack-mates.

The engine knows nothing of sweeps, stores or the CLI: it is handed checkpoint paths and callbacks.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from . import data as D
from . import transforms as T
from .checkpoints import load_checkpoint, save_pack, settle
from .models import count_flops, count_params, init_model, scales_in, steps_per_epoch
from .optimizers import lr_at
from .spec import RunSpec
from .tuning import choose_fuse
from .units import Options, Unit, make_streams, step_all

OnEpoch = Callable[[int, "EpochRecord", bool], None]  # (run index in the pack, record, checkpointed)
OnStep = Callable[[int, int], None]  # (steps done, steps in the epoch)
# Fault injection for tests: with ROBUSTRES_TEST_FAIL=<run_id>:<n> the pack holding that run raises
# before its epoch n + 1, in whichever process or Ray task trains it (the epochs before are kept).
FAULT_SWITCH = "ROBUSTRES_TEST_FAIL"


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    seconds: float


@dataclass
class Outcome:
    status: str  # completed | diverged (completed also when it stopped at Options.stop_at: see `finished`)
    history: list[EpochRecord] = field(default_factory=list)
    diverged_epoch: int | None = None
    diverged_step: int | None = None  # 1-based step within the diverged epoch
    seconds: float = 0.0
    layer_stats: list[dict] = field(default_factory=list)  # {step, layer, weight_norm, grad_norm}
    fused: bool | None = None  # how the pack executed: one fused network, or its models in turn
    # h rule learned: each block's scale (forward order) after the last epoch recorded; for a
    # diverged run, after its last finite epoch (its frozen scales are zeros, not results)
    scales: list[float] = field(default_factory=list)

    epochs: int = 0  # of the run's schedule

    @property
    def finished(self) -> bool:
        """Diverged, or trained to the schedule's end (not paused at a rung)."""
        return self.status == "diverged" or len(self.history) >= self.epochs

    @property
    def final_test_acc(self) -> float | None:
        return self.history[-1].test_acc if self.history and self.status == "completed" and self.finished else None

    @property
    def best(self) -> EpochRecord | None:
        return max(self.history, key=lambda r: r.test_acc) if self.history else None


# ---------------------------------------------------------------------------------------------
# Descriptions and schedules
# ---------------------------------------------------------------------------------------------


def describe(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """Parameter count and forward multiply-adds per input of the run's model."""
    model = init_model(spec, num_classes, input_shape)
    dtype = torch.long if spec.modality == "text" else torch.float32
    example = torch.zeros((1, *input_shape), dtype=dtype)
    return {"params": count_params(model), "flops_per_image": count_flops(model, example)}


# ---------------------------------------------------------------------------------------------
# The training loop, read top to bottom
# ---------------------------------------------------------------------------------------------


def train(specs: Sequence[RunSpec], data: D.Data, device: torch.device,
          checkpoints: Sequence[Path | None] | None = None, on_epoch: OnEpoch | None = None,
          on_step: OnStep | None = None, options: Options = Options()) -> list[Outcome]:
    """Train a pack of runs on `data` (already on `device`); one Outcome per run, in order.

    The runs must share everything but h, seed, training noise, lr, momentum and weight decay (each
    model steps with its own; the schedule's milestones and gamma are shared), and their
    checkpoints (if any) must be at the same epoch: resume works per pack.
    """
    specs, first = list(specs), specs[0]
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * len(specs)
    set_device_flags(device)

    # Resume: every run's history and seconds from its checkpoint; the pack goes on the way it
    # started (fused or in turn differ by float rounding), which each outcome records.
    states, outcomes, recorded_fuse = resume(specs, checkpoints)
    fuse = recorded_fuse if options.fuse is None and recorded_fuse is not None else choose_fuse(specs, device, options)
    for outcome in outcomes:
        outcome.fused = fuse
    groups = [list(range(len(specs)))] if fuse else [[i] for i in range(len(specs))]
    units = [Unit(g, specs, data, device, options, [states[i] for i in g] if states else None) for g in groups]
    streams = make_streams(units, device, options)
    seeds = torch.tensor([s.seed for s in specs], device=device)
    n, steps = len(data.train_y), steps_per_epoch(first, len(data.train_y))
    dead: set[int] = set()
    last_save = time.perf_counter()
    start_epoch = len(outcomes[0].history) if states else 0
    last_epoch = first.epochs if options.stop_at is None else min(first.epochs, options.stop_at)

    for epoch in epochs_to_train(specs, start_epoch, last_epoch):
        # One pass over the data: each run in its own order, every unit one step at a time.
        started = time.perf_counter()
        order = T.order(seeds, epoch, n)  # [K, n]
        for unit in units:
            unit.set_lr(epoch)
            unit.start_epoch()
        for step in range(steps):
            step_all(units, data, order, epoch, step, first.batch_size, streams)
            if on_step is not None:
                on_step(step + 1, steps)

        # What the epoch's steps left on the device: layer statistics and new divergences.
        train_seconds = time.perf_counter() - started
        for unit in units:
            collect_layer_stats(unit, outcomes, dead, epoch, steps, options.track_every)
            mark_diverged(unit, outcomes, dead, epoch, train_seconds / len(specs))
        if len(dead) == len(specs):
            break

        # Evaluate, record the epoch, and checkpoint every living run when it is time: all of them
        # or (killed meanwhile) none.
        save = epoch + 1 == last_epoch or time.perf_counter() - last_save >= options.checkpoint_seconds
        save_pack([item for unit in units for item in record_epoch(unit, data, specs, outcomes, dead, epoch,
                                                                   started, checkpoints if save else None, fuse)])
        last_save = time.perf_counter() if save else last_save
        for i in (i for i, _ in enumerate(outcomes) if on_epoch is not None and i not in dead):
            on_epoch(i, outcomes[i].history[-1], save)
        # Dead models leave their fused unit at the epoch's end: they stop costing compute.
        units, streams = shrink(units, dead, specs, data, device, options, streams)
    return outcomes


# ---------------------------------------------------------------------------------------------
# The loop's parts
# ---------------------------------------------------------------------------------------------


def epochs_to_train(specs: list[RunSpec], start: int, stop: int) -> Iterator[int]:
    """range(start, stop); but raise before an epoch when FAULT_SWITCH names a run of this pack
    and that many epochs are done."""
    run_id, _, at = os.environ.get(FAULT_SWITCH, "").partition(":")
    for epoch in range(start, stop):
        if run_id and at == str(epoch) and any(spec.run_id == run_id for spec in specs):
            raise RuntimeError(f"injected fault ({FAULT_SWITCH}) after epoch {epoch}")
        yield epoch


def set_device_flags(device: torch.device) -> None:
    if device.type == "cuda":
        # fp32 means fp32: no TF32 inside "float32" convolutions and matmuls. bf16 is --precision bf16.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True


def resume(specs: list[RunSpec],
           checkpoints: list[Path | None]) -> tuple[list[dict] | None, list[Outcome], bool | None]:
    """(the runs' saved states or None, their outcomes so far, how the pack executed or None)."""
    settle([path for path in checkpoints if path is not None])
    saved = [load_checkpoint(path, spec.run_id) for spec, path in zip(specs, checkpoints)]
    done = {len(s["history"]) if s else 0 for s in saved}
    if len(done) > 1:
        raise ValueError(f"a pack resumes together: its runs' checkpoints are at epochs {sorted(done)}")
    outcomes = [Outcome(status="completed", epochs=spec.epochs) for spec in specs]
    if done.pop() == 0:
        return None, outcomes, None
    for outcome, state in zip(outcomes, saved):
        outcome.history = [EpochRecord(**r) for r in state["history"]]
        outcome.seconds = float(state["seconds"])
        outcome.layer_stats = list(state.get("layer_stats", []))
        outcome.scales = scales_in(state["model"])
    recorded = {s.get("fused") for s in saved}
    return saved, outcomes, recorded.pop() if len(recorded) == 1 else None


def collect_layer_stats(unit: Unit, outcomes: list[Outcome], dead: set[int], epoch: int, steps: int,
                        every: int) -> None:
    """The tracked layers' norms of this epoch (every step of the first, then every `every`)."""
    if not unit.tracked:
        return
    buf = unit.track_buf.cpu()  # [steps, layers, 2, K]: read once per epoch
    kept = [s for s in range(steps) if epoch == 0 or s % every == 0]
    for step in kept:
        for li, (layer, _) in enumerate(unit.tracked):
            for j, i in enumerate(unit.members):
                if i not in dead:
                    outcomes[i].layer_stats.append({
                        "step": epoch * steps + step + 1, "layer": layer,
                        "weight_norm": float(buf[step, li, 0, j]), "grad_norm": float(buf[step, li, 1, j])})


def shrink(units: list[Unit], dead: set[int], specs: list[RunSpec], data: D.Data, device: torch.device,
           options: Options, streams) -> tuple[list[Unit], list | None]:
    """The units without their dead models: a fused unit with some is rebuilt from its living
    models' states (weights, optimizer, batch-norm statistics), which go on exactly as before;
    a unit with none alive is dropped."""
    kept, changed = [], False
    for unit in units:
        live = [(j, i) for j, i in enumerate(unit.members) if i not in dead]
        if len(live) == len(unit.members):
            kept.append(unit)
            continue
        changed = True
        if live:
            states = [dict(zip(("model", "optimizer"), unit.checkpoint_state(j))) for j, _ in live]
            kept.append(Unit([i for _, i in live], specs, data, device, options, states))
    return (kept, make_streams(kept, device, options)) if changed else (units, streams)


def mark_diverged(unit: Unit, outcomes: list[Outcome], dead: set[int], epoch: int, seconds: float) -> None:
    """Runs whose loss turned non-finite this epoch: record where, then freeze their slices."""
    alive = unit.alive.tolist()
    newly_dead = [j for j, ok in enumerate(alive) if not ok and j not in unit.frozen]
    for j in newly_dead:
        i = unit.members[j]
        outcomes[i].status = "diverged"
        outcomes[i].diverged_epoch = epoch + 1
        outcomes[i].diverged_step = int(unit.bad_step[j].item())
        outcomes[i].seconds += seconds
        dead.add(i)
    if newly_dead:
        unit.freeze(newly_dead)


def record_epoch(unit: Unit, data: D.Data, specs: list[RunSpec], outcomes: list[Outcome], dead: set[int],
                 epoch: int, started: float, checkpoints: list[Path | None] | None,
                 fused: bool) -> list[tuple[Path, dict]]:
    """Test the unit's models and append each living run's EpochRecord; returns the (path, state)
    checkpoints to save when asked for them."""
    test_loss, test_acc = unit.evaluate(data)
    n = len(data.train_y)
    train_loss, train_acc = (unit.loss_sum / n).tolist(), (unit.correct.double() / n).tolist()
    saving = []
    for j, i in enumerate(unit.members):
        if i in dead:
            continue
        seconds = (time.perf_counter() - started) / len(specs)  # a pack's time, shared out
        outcomes[i].history.append(EpochRecord(epoch + 1, train_loss[j], train_acc[j], test_loss[j], test_acc[j],
                                               lr_at(specs[i], epoch), seconds))
        outcomes[i].seconds += seconds
        outcomes[i].scales = unit.scale_values(j)
        if checkpoints is not None and checkpoints[i] is not None:
            model_state, optimizer_state = unit.checkpoint_state(j)
            saving.append((checkpoints[i], {
                "run_id": specs[i].run_id, "model": model_state, "optimizer": optimizer_state,
                "history": [asdict(r) for r in outcomes[i].history], "seconds": outcomes[i].seconds,
                "layer_stats": outcomes[i].layer_stats, "fused": fused}))
    return saving
