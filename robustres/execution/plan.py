"""From runs to packs, for every executor and for the dry run: grouping, pack size and order.

A pack holds runs that differ only in h, seed, training-noise level, lr, momentum and weight decay
(each model steps with its own, optimizers.py; the architecture, batch norm, optimizer, batch size,
schedule and data are shared) and that stand at the same epoch, since a pack resumes together.
Runs are grouped by their data first (one dataset on the device at a time); each group is cut into
packs of at most the pack size, as evenly as possible, and the packs are ordered most expensive
first, so that the long ones do not start last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .. import engine
from ..datasets import data_key, train_examples
from ..spec import RUN_FIELDS, RunSpec

# What may differ inside a pack: per-model tensors of the fused network and of its optimizer.
PER_MODEL_FIELDS = ("h", "seed", "train_noise", "lr", "momentum", "weight_decay")
# `--pack-size auto` where nothing measures the device the packs will run on (Ray workers, several
# local workers, a dry run on CUDA): at most this many runs per pack. The local executor measures.
AUTO_PACK_CAP = 16


@dataclass(frozen=True)
class Pack:
    runs: tuple[RunSpec, ...]
    start_epoch: int = 0  # epochs already done by every run of the pack (from checkpoints)

    @property
    def k(self) -> int:
        return len(self.runs)


def pack_key(spec: RunSpec) -> RunSpec:
    """Runs with equal keys may share a pack."""
    # h rules fixed, sqrt and linear only set each model's h; learned scales are parameters of their own
    return spec.with_(**{name: 0 for name in PER_MODEL_FIELDS}, h_rule="learned" if spec.h_rule == "learned" else "")


def split_fields(runs: list[RunSpec]) -> tuple[str, ...]:
    """The fields that put these runs into separate packs: those outside PER_MODEL_FIELDS whose
    values differ among them (depth, optimizer, bn, batch_size, epochs, ...), in field order."""
    keys = {pack_key(spec) for spec in runs}
    return tuple(f.name for f in RUN_FIELDS if len({getattr(key, f.name) for key in keys}) > 1)


def by_data(runs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs grouped by their data, in order of first appearance."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault(data_key(spec), []).append(spec)
    return list(groups.values())


def pack_size(requested: int | None, group: list[RunSpec], measured: int | None = None) -> int:
    """The pack size policy: what was asked for, else what the device was measured to fit, else the cap."""
    if requested is not None:
        return requested
    if measured is not None:
        return measured
    return min(len(group), AUTO_PACK_CAP)


def make_packs(runs: list[RunSpec], size: int | None, epochs_done: dict[str, int] | None = None,
               todo: list[RunSpec] | None = None) -> list[Pack]:
    """Group `runs` (in order) into packs of at most `size` runs (None: no limit), keeping only the
    runs in `todo` (default: all).

    Packs are cut from the whole request and only then thinned to what is left to train, so a
    resumed run trains beside the very pack-mates it started with (a fused pack computes each
    model alike only to float rounding, so its mates are part of its result). Runs of one pack
    whose checkpoints are at different epochs (a search's runs paused at different rungs) become
    one pack per epoch.
    """
    epochs_done = epochs_done or {}
    left = None if todo is None else {spec.run_id for spec in todo}
    groups: dict[RunSpec, list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault(pack_key(spec), []).append(spec)
    packs = []
    for members in groups.values():
        count = 1 if size is None else math.ceil(len(members) / size)
        cuts = [len(members) * i // count for i in range(count + 1)]  # even: 10 runs, at most 4 -> 3, 3, 4
        for a, b in zip(cuts, cuts[1:]):
            by_start: dict[int, list[RunSpec]] = {}
            for spec in members[a:b]:
                if left is None or spec.run_id in left:
                    by_start.setdefault(epochs_done.get(spec.run_id, 0), []).append(spec)
            packs.extend(Pack(tuple(pack), start) for start, pack in by_start.items())
    return packs


_FLOPS: dict[tuple, int] = {}


def flops_per_image(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Forward multiply-adds per input of the run's model (the engine counts them; cached per model)."""
    key = (spec.model, spec.depth, spec.width, spec.hidden, spec.bn, input_shape, num_classes)
    if key not in _FLOPS:
        _FLOPS[key] = engine.describe(spec, input_shape, num_classes)["flops_per_image"]
    return _FLOPS[key]


def flops_in(datasets: dict) -> Callable[[RunSpec], int]:
    """The planner's cost of a run: its model's FLOPs on its loaded data (data_key -> data.Data)."""
    def flops(spec: RunSpec) -> int:
        data = datasets[data_key(spec)]
        return flops_per_image(spec, data.input_shape, data.num_classes)

    return flops


def pack_cost(pack: Pack, flops_per_image: int, n_train: int | None = None) -> float:
    """Training FLOPs still to do: 3x the forward multiply-adds, per image, epoch and model
    (`n_train`: the data's own training examples before --limit-train, when it was read)."""
    first = pack.runs[0]
    n = train_examples(first, n_train)
    return 3.0 * flops_per_image * n * (first.epochs - pack.start_epoch) * pack.k


def plan_group(group: list[RunSpec], size: int, epochs_done: dict[str, int],
               flops_per_image: Callable[[RunSpec], int], n_train: int | None = None,
               todo: list[RunSpec] | None = None) -> list[tuple[Pack, float]]:
    """The packs of one data group (of its runs in `todo`) with their costs, most expensive first."""
    packs = make_packs(group, size, epochs_done, todo)
    costed = [(p, pack_cost(p, flops_per_image(p.runs[0]), n_train)) for p in packs]
    return sorted(costed, key=lambda pc: -pc[1])


def plan_all(runs: list[RunSpec], requested: int | None, epochs_done: dict[str, int],
             flops_per_image: Callable[[RunSpec], int], todo: list[RunSpec] | None = None) -> list[Pack]:
    """Every pack of `runs` (of those in `todo`) where nothing measures the device (workers, Ray):
    cap, then cost order."""
    costed = [pc for group in by_data(runs)
              for pc in plan_group(group, pack_size(requested, group), epochs_done, flops_per_image, todo=todo)]
    return [p for p, _ in sorted(costed, key=lambda pc: -pc[1])]
