"""One fused pack of several learning rates against one pack per learning rate (issue 24, item 2).

Before optimizers.py a pack shared its optimizer's hyperparameters, so a sweep over L learning rates
trained L packs; now runs that differ in lr (momentum, weight decay) share one fused network. For
each workload this counts, for one training step of everything, the FLOPs (3x the forward
multiply-adds of models.count_flops, as plan.pack_cost), the bytes every ATen op reads and writes
and the number of ops (each its own kernel on a GPU), then times the steps side by side in one
process (interleaved, median of a few steps after a warm-up) and reports model-images per second.

    .venv/bin/python -m benchmarks.fused_hyper        # from the repository root, ~2-3 min on 2 cores
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections import defaultdict
from datetime import date

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.execution_choice import median_step
from robustres import data as D
from robustres import transforms as T
from robustres.models import count_flops, init_model
from robustres.optimizers import PackOptimizer
from robustres.spec import make_run_spec
from robustres.units import Options, Unit, step_all

CPU = torch.device("cpu")
LRS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
WORKLOADS = [  # name, run options, learning rates, runs per learning rate (step factors), timed steps
    ("two-moons MLP, depth 10", dict(dataset="two-moons", depth=10), LRS, 1, 40),
    ("two-moons MLP, depth 10", dict(dataset="two-moons", depth=10), LRS[2:6], 4, 40),
    ("CIFAR ResNet-20 (synthetic)", dict(dataset="synthetic", depth=20, n_train=512, n_test=128), LRS[3:7], 1, 2),
]


class Counter(TorchDispatchMode):
    """Bytes read + written and the number of every ATen op that is not a view, per op class."""

    def __init__(self):
        super().__init__()
        self.bytes, self.ops = defaultdict(int), defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if not func.is_view and name not in ("detach", "lift_fresh"):
            # An in-place foreach op returns nothing: its first list is read and written.
            written = args[0] if out is None and name.endswith("_") else out
            tensors = [t for t in tree_flatten((args, kwargs or {}, written))[0] if isinstance(t, torch.Tensor)]
            part = "optimizer" if name.startswith("_foreach") else "rest"
            self.bytes[part] += sum(t.numel() * t.element_size() for t in tensors)
            self.ops[part] += 1
        return out


def setup(options: dict, lrs, per_lr: int, fused: bool):
    """The runs (lr x h), and their units: one fused pack, or one fused pack per lr."""
    specs = [make_run_spec(**options, lr=lr, h=0.1 * (j + 1), seed=j) for lr in lrs for j in range(per_lr)]
    data = D.load(specs[0], ".")
    every = list(range(len(specs)))
    groups = [every] if fused else [every[i:i + per_lr] for i in range(0, len(specs), per_lr)]
    units = [Unit(g, specs, data, CPU, Options(fuse=True)) for g in groups]
    for unit in units:
        unit.set_lr(0)
        unit.start_epoch()
    order = T.order(torch.tensor([s.seed for s in specs]), 0, len(data.train_y))
    return specs, data, units, order


def count_step(options, lrs, per_lr, fused) -> tuple[dict, dict]:
    specs, data, units, order = setup(options, lrs, per_lr, fused)
    step_all(units, data, order, 0, 0, specs[0].batch_size)  # the first step allocates what it keeps
    counter = Counter()
    with counter:
        step_all(units, data, order, 0, 1, specs[0].batch_size)
    return counter.bytes, counter.ops


def seconds_per_step(options, lrs, per_lr, fused, steps) -> float:
    specs, data, units, order = setup(options, lrs, per_lr, fused)
    return median_step(units, data, order, specs[0].batch_size, steps)


def optimizer_alone(options: dict, k: int, repeats: int = 20) -> tuple[float, float]:
    """Seconds of one optimizer step over a fused pack's parameters: per-model tensors (ours)
    against torch.optim.SGD (foreach, one lr for all)."""
    spec = make_run_spec(**options)
    data = D.load(spec, ".")
    model = Unit(list(range(k)), [spec.with_(seed=i) for i in range(k)], data, CPU, Options(fuse=True)).model
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    ours = PackOptimizer(model.parameters(), [spec.with_(lr=lr) for lr in LRS[:k]])
    theirs = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    result = []
    for opt in (ours, theirs, ours, theirs):
        opt.step()
        started = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        result.append((time.perf_counter() - started) / repeats)
    return min(result[0::2]), min(result[1::2])


def main() -> None:
    torch.set_num_threads(1)
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}; SGD momentum 0.9, every pack executed fused")
    print("\n| workload | runs | execution | FLOP per step | MB per step (optimizer) | ATen ops per step (optimizer) "
          "| s per step | model-images/s |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for name, options, lrs, per_lr, steps in WORKLOADS:
        spec = make_run_spec(**options)
        data = D.load(spec, ".")
        flops = 3 * count_flops(init_model(spec, data.num_classes, data.input_shape),
                                torch.zeros((1, *data.input_shape)))
        k = len(lrs) * per_lr
        images = k * spec.batch_size
        rows = {}
        for fused in (True, False):
            moved, ops = count_step(options, lrs, per_lr, fused)
            rows[fused] = [moved, ops, []]
        for fused in (True, False, True, False):  # interleaved: load drifts hit both alike
            rows[fused][2].append(seconds_per_step(options, lrs, per_lr, fused, steps))
        for fused in (True, False):
            moved, ops, times = rows[fused]
            seconds = statistics.mean(times)
            how = f"one pack of {k}" if fused else f"{len(lrs)} packs of {per_lr} (one per lr)"
            print(f"| {name} | {len(lrs)} lr x {per_lr} h | {how} | {flops * images / 1e9:.3f} G | "
                  f"{sum(moved.values()) / 1e6:.1f} ({moved['optimizer'] / 1e6:.2f}) | "
                  f"{sum(ops.values()):,} ({ops['optimizer']}) | {seconds:.4f} | {images / seconds:,.0f} |")
        ratio = statistics.mean(rows[False][2]) / statistics.mean(rows[True][2])
        ratios.append((f"{name}, {len(lrs)} lr x {per_lr} h", ratio))
    print()
    for label, ratio in ratios:
        print(f"{label}: one fused pack / one pack per lr = {ratio:.2f}x model-images/s")
    ours, theirs = optimizer_alone(WORKLOADS[2][1], 4)
    print(f"\noptimizer step alone, CIFAR ResNet-20 K=4 fused parameters: per-model tensors {ours * 1e3:.2f} ms, "
          f"torch.optim.SGD (foreach, one lr) {theirs * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
