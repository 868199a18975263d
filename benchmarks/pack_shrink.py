"""What shedding dead models saves (issue 16): a fused pack where half the models diverge at once,
trained with the engine's shrinking and with it switched off (the dead slices left in, frozen).

Reports seconds per epoch after the divergence and model-images per second per living model, side
by side in one process. From the repository root (about a minute on 2 cores):

    .venv/bin/python -m benchmarks.pack_shrink
"""

from __future__ import annotations

import os
import platform
import time
from datetime import date

import torch

from robustres import data as D
from robustres import engine
from robustres.spec import make_run_spec
from robustres.units import Options


def timed(specs, data, shrinking: bool) -> list[float]:
    """Seconds of each epoch after the first (the one in which the h = 20 models diverge)."""
    real = engine.shrink
    if not shrinking:
        engine.shrink = lambda units, *_rest: (units, _rest[-1])  # the dead slices stay, frozen
    stamps = []
    try:
        engine.train(specs, data, torch.device("cpu"), options=Options(fuse=True, checkpoint_seconds=1e9),
                     on_epoch=lambda i, *_rest: stamps.append(time.perf_counter()) if i == 0 else None)
    finally:
        engine.shrink = real
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


def main() -> None:
    torch.set_num_threads(1)
    k, epochs = 16, 12
    specs = [make_run_spec(dataset="two-moons", depth=30, h=0.1 if i % 2 == 0 else 20.0, seed=i, epochs=epochs,
                           n_train=4000) for i in range(k)]
    data = D.load(specs[0], ".")
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}; two-moons depth 30, K={k} fused, half at h = 20 (diverge in "
          f"epoch 1), {len(data.train_y)} training points")
    rows = []
    for shrinking in (False, True, False, True):  # interleaved: load drifts hit both alike
        per_epoch = timed(specs, data, shrinking)
        rows.append((shrinking, sum(per_epoch) / len(per_epoch)))
    print("| dead models | s per epoch (after divergence) | model-images/s per living model |")
    print("|---|---|---|")
    for shrinking, seconds in rows:
        print(f"| {'shed' if shrinking else 'kept, frozen'} | {seconds:.4f} | {len(data.train_y) / seconds:,.0f} |")
    kept = sum(s for f, s in rows if not f) / 2
    shed = sum(s for f, s in rows if f) / 2
    print(f"\nshedding: {kept / shed:.2f}x faster per epoch")


if __name__ == "__main__":
    main()
