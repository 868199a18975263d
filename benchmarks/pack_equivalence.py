"""What users see must not depend on packing: final accuracy of runs trained alone and packed.

5 seeds x h in {0.1, 1}, each configuration trained (a) alone, as a pack of one, and (b) all ten
in one fused pack; the median and spread (min-max) of the final test accuracy per h, side by side.
Two workloads: two-moons (MLP ResNet, 10 blocks) and a CIFAR subset (ResNet-8, real images from an
image folder when --data is given, else synthetic ones).

    .venv/bin/python -m benchmarks.pack_equivalence --data .data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from robustres import data as D
from robustres import devices, engine, units
from robustres.spec import make_run_spec

SEEDS = range(5)
HS = (0.1, 1.0)


def compare(name: str, specs, data, device) -> list[str]:
    started = time.perf_counter()
    alone = [engine.train([s], data, device, options=units.Options(fuse=True))[0] for s in specs]
    t_alone = time.perf_counter() - started
    started = time.perf_counter()
    packed = engine.train(specs, data, device, options=units.Options(fuse=True))
    t_packed = time.perf_counter() - started
    lines = []
    for h in HS:
        cells = []
        for outcomes in (alone, packed):
            accs = [100 * (o.final_test_acc if o.final_test_acc is not None else float("nan"))
                    for s, o in zip(specs, outcomes) if s.h == h]
            diverged = sum(o.status == "diverged" for s, o in zip(specs, outcomes) if s.h == h)
            finite = [a for a in accs if a == a]
            med = statistics.median(finite) if finite else float("nan")
            spread = f"{min(finite):.1f}-{max(finite):.1f}" if finite else "-"
            cells.append(f"{med:.1f} ({spread}){f', {diverged} diverged' if diverged else ''}")
        same = sum(abs(a.history[-1].test_acc - b.history[-1].test_acc) < 1e-9
                   for s, a, b in zip(specs, alone, packed) if s.h == h and a.history and b.history)
        lines.append(f"| {name} | {h:g} | {cells[0]} | {cells[1]} | {same}/5 |")
    lines.append(f"| {name} | time | {t_alone:.0f} s for 10 runs alone | {t_packed:.0f} s as one pack | |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="synthetic", help="image folder for the CIFAR workload, or synthetic")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    device = devices.resolve_device(args.device)
    rows = ["| workload | h | alone: median (min-max) % | packed: median (min-max) % | identical final acc |",
            "|---|---|---|---|---|"]

    moons = [make_run_spec(dataset="two-moons", depth=10, h=h, seed=s) for s in SEEDS for h in HS]
    rows += compare("two-moons, 10 blocks, 30 epochs", moons, D.load(moons[0], ".").to(device), device)

    common = dict(depth=8, epochs=4, batch_size=128, milestones=(3,), limit_train=2048, limit_test=1000)
    if args.data == "synthetic":
        cifar = [make_run_spec(dataset="synthetic", n_train=2048, n_test=1000, **{k: v for k, v in common.items()
                 if not k.startswith("limit")}, h=h, seed=s) for s in SEEDS for h in HS]
    else:
        cifar = [make_run_spec(dataset="imagefolder", **common, h=h, seed=s) for s in SEEDS for h in HS]
    data = D.load(cifar[0], Path(args.data)).to(device)
    rows += compare(f"CIFAR {args.data.split('/')[-1]}, ResNet-8, 2048 images, 4 epochs", cifar, data, device)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
