"""Prop. 1 on real CIFAR: the early-layer gradient of a very deep ResNet explodes at h = 1, not at
h = 0.1. ResNet-218, batch 64, lr 0.1, seed 0; the layer-2 gradient norm over the first SGD steps,
recorded through the CLI's --track-layers (the same path users take).

    .venv/bin/python -m benchmarks.gradient_fact --data .data/cifar10-jpeg [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from robustres.store import Store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=".data/cifar10-jpeg")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--depth", type=int, default=218)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as store:
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "robustres", "train", "--dataset", "imagefolder", "--data-dir", args.data,
               "--depth", str(args.depth), "--h", "0.1,1", "--batch-size", "64", "--lr", "0.1", "--epochs", "1",
               "--limit-train", str(64 * args.steps), "--limit-test", "100", "--track-layers", "2",
               "--no-fuse", "--store", store, "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, ROBUSTRES_OFFLINE="1"))
        assert done.returncode == 0, done.stderr[-2000:]
        stats = Store(store).layer_stats().merge(Store(store).runs(columns=["run_id", "h"]), on="run_id")
        table = stats.pivot_table(index="step", columns="h", values="grad_norm")
        print(f"ResNet-{args.depth}, real CIFAR, batch 64, lr 0.1, seed 0: layer-2 gradient norm "
              f"({time.perf_counter() - started:.0f} s)")
        print(f"{'step':>4} {'h = 0.1':>12} {'h = 1':>12} {'ratio':>8}")
        for step, row in table.iterrows():
            print(f"{step:>4} {row[0.1]:12.4g} {row[1.0]:12.4g} {row[1.0] / row[0.1]:8.0f}x")
        ratio = (table[1.0] / table[0.1]).min()
        print(f"smallest ratio over the first {len(table)} steps: {ratio:.0f}x "
              f"({'holds' if ratio >= 100 else 'does NOT hold'}: >= 100x)")


if __name__ == "__main__":
    main()
