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
