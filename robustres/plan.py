"""From runs to packs: which runs train together as one network.

A pack holds runs that differ only in h, seed and training-noise level (everything else, the
architecture and the schedule, is shared) and that stand at the same epoch, since a pack resumes
together. Packs are cut to at most `pack_size` runs, as evenly as possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .spec import RunSpec

PER_MODEL_FIELDS = ("h", "seed", "train_noise")  # what may differ inside a pack


@dataclass(frozen=True)
class Pack:
    runs: tuple[RunSpec, ...]
    start_epoch: int = 0  # epochs already done by every run of the pack (from checkpoints)

    @property
    def k(self) -> int:
        return len(self.runs)


def pack_key(spec: RunSpec) -> RunSpec:
    """Runs with equal keys may share a pack."""
    return spec.with_(**{name: 0 for name in PER_MODEL_FIELDS})


def make_packs(runs: list[RunSpec], pack_size: int | None, epochs_done: dict[str, int] | None = None) -> list[Pack]:
    """Group `runs` (in order) into packs of at most `pack_size` runs (None: no limit)."""
    epochs_done = epochs_done or {}
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault((pack_key(spec), epochs_done.get(spec.run_id, 0)), []).append(spec)
    packs = []
    for (_, start), members in groups.items():
        count = 1 if pack_size is None else math.ceil(len(members) / pack_size)
        cuts = [len(members) * i // count for i in range(count + 1)]  # even: 10 runs, at most 4 -> 3, 3, 4
        for a, b in zip(cuts, cuts[1:]):
            packs.append(Pack(tuple(members[a:b]), start))
    return packs


# Training-set sizes for cost estimates before any data is loaded.
TRAIN_SIZES = {"cifar10": 50_000, "imagefolder": 50_000, "ag-news": 120_000}


def train_size(spec: RunSpec) -> int:
    size = spec.n_train or TRAIN_SIZES.get(spec.dataset, 1_000)
    return min(size, spec.limit_train) if spec.limit_train else size


def pack_cost(pack: Pack, flops_per_image: int, n_train: int | None = None) -> float:
    """Training FLOPs still to do: 3x the forward multiply-adds, per image, epoch and model."""
    first = pack.runs[0]
    n = n_train if n_train is not None else train_size(first)
    return 3.0 * flops_per_image * n * (first.epochs - pack.start_epoch) * pack.k


def order_by_cost(packs: list[Pack], costs: list[float]) -> list[Pack]:
    """Most expensive first, so that the long packs do not start last."""
    return [p for _, p in sorted(zip(costs, packs), key=lambda t: -t[0])]
