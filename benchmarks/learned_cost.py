"""What learned step scales cost per training step, against fixed ones (issue 25, item 8).

A learned h is a parameter of one scalar per block and model (models.StepScale): the forward pass
multiplies by it as it would by a fixed h, and the backward pass adds its gradient (a reduction of
F(x) * grad over the batch and channels), and the optimizer steps one more tensor per block. For
each workload this builds the same pack twice, fixed and learned (same runs, seeds and h, one fused
network each), counts the ATen ops of one step (each its own kernel on a GPU), and times the steps
side by side in one process: rounds of fixed then learned, alternating, the median step of each
round, the mean over rounds. Target: learned under 5 % slower.

    .venv/bin/python -m benchmarks.learned_cost        # from the repository root, ~1-2 min on 2 cores
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import date

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robustres import data as D
from robustres import transforms as T
from robustres.spec import make_run_spec
from robustres.units import Options, Unit

CPU = torch.device("cpu")
HS = (0.1, 0.2, 0.5, 1.0)
WORKLOADS = [  # name, run options, pack size, timed steps per round, rounds (more where steps are cheap)
    ("two-moons MLP, depth 16", dict(dataset="two-moons", depth=16), 8, 60, 10),
    ("CIFAR ResNet-20 (synthetic)", dict(dataset="synthetic", depth=20, n_train=512, n_test=128), 2, 4, 4),
]


class OpCounter(TorchDispatchMode):
    """The ATen ops of a step that are not views (each a kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.__name__.split(".")[0] not in ("detach", "lift_fresh"):
            self.ops += 1
        return func(*args, **(kwargs or {}))


def setup(options: dict, k: int, rule: str):
    specs = [make_run_spec(**options, h=HS[i % len(HS)], seed=i, h_rule=rule) for i in range(k)]
    data = D.load(specs[0], ".")
    unit = Unit(list(range(k)), specs, data, CPU, Options(fuse=True))
    unit.set_lr(0)
    unit.start_epoch()
    order = T.order(torch.tensor([s.seed for s in specs]), 0, len(data.train_y))
    return unit, data, order, specs[0].batch_size


def ops_per_step(options: dict, k: int, rule: str) -> int:
    unit, data, order, batch = setup(options, k, rule)
    unit.train_step(data, order, 0, 0, batch)  # the first step allocates what it keeps
    counter = OpCounter()
    with counter:
        unit.train_step(data, order, 0, 1, batch)
    return counter.ops


def median_step(state, steps: int) -> float:
    unit, data, order, batch = state
    per_epoch = max(1, len(data.train_y) // batch)
    times = []
    for i in range(steps):
        started = time.perf_counter()
        unit.train_step(data, order, 0, i % per_epoch, batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}; every pack fused, SGD, rounds alternating")
    print("\n| workload | pack | h rule | ATen ops per step | ms per step (rounds) | learned / fixed |")
    print("|---|---|---|---|---|---|")
    for name, options, k, steps, repeats in WORKLOADS:
        states = {rule: setup(options, k, rule) for rule in ("fixed", "learned")}
        for state in states.values():  # warm-up: first-touch allocations, oneDNN's primitive caches
            median_step(state, 2)
        rounds: dict[str, list[float]] = {"fixed": [], "learned": []}
        for _ in range(repeats):
            for rule in ("fixed", "learned"):
                rounds[rule].append(median_step(states[rule], steps))
        mean = {rule: statistics.mean(times) for rule, times in rounds.items()}
        for rule in ("fixed", "learned"):
            listed = ", ".join(f"{t * 1e3:.2f}" for t in rounds[rule])
            ratio = f"{mean['learned'] / mean['fixed']:.3f}x" if rule == "learned" else ""
            print(f"| {name} | {k} | {rule} | {ops_per_step(options, k, rule):,} | "
                  f"{mean[rule] * 1e3:.2f} ({listed}) | {ratio} |")


if __name__ == "__main__":
    main()
