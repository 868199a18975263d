"""How a pack executes on the CPU: fused against models in turn, per model family, and 1 thread
against 2 on a quiet and on a loaded machine. The numbers behind `tuning.FUSE_RULES` and the
default of `--threads` (issue 14); results in benchmarks/RESULTS.md.

(a) fuse: steps of one pack of K models, as one fused network and as its K models in turn, at
    the default thread count, for the MLP (two-moons), the CIFAR ResNet and the text ResNet.
(b) threads: the same steps at 1 and at 2 threads, first on the quiet machine and then while
    another job (a process running 2-thread float32 matmuls) shares the cores.

From the repository root (about 3 minutes on 2 cores):

    .venv/bin/python -m benchmarks.execution_choice
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from datetime import date

import torch

from robustres import data as D
from robustres import transforms as T
from robustres.spec import make_run_spec
from robustres.units import Options, Unit, step_all

WORKLOADS = {  # name: (run options, K)
    "two-moons MLP, depth 10, K=8": (dict(dataset="two-moons", depth=10), 8),
    "CIFAR ResNet-20, K=4": (dict(dataset="synthetic", synthetic_like="cifar10", depth=20, n_train=512,
                                  n_test=128), 4),
    "text ResNet-9, K=4": (dict(dataset="synthetic", synthetic_like="ag-news", depth=9, n_train=256,
                                n_test=64), 4),
}


def pack(options: dict, k: int):
    specs = [make_run_spec(**options, h=0.1 * (i + 1), seed=i) for i in range(k)]
    return specs, D.load(specs[0], ".")


def seconds_per_step(specs, data, fuse: bool, steps: int) -> float:
    """Median seconds of one step of the whole pack (after one warm-up step)."""
    device, options = torch.device("cpu"), Options(fuse=fuse)
    units = [Unit(list(range(len(specs))), specs, data, device, options)] if fuse else \
        [Unit([i], specs, data, device, options) for i in range(len(specs))]
    order = T.order(torch.tensor([s.seed for s in specs]), 0, len(data.train_y))
    for unit in units:
        unit.start_epoch()
    return median_step(units, data, order, specs[0].batch_size, steps)


def median_step(units, data, order, batch: int, steps: int) -> float:
    """Median seconds of one step of these units over `steps` steps, after one warm-up step."""
    times, per_epoch = [], max(1, len(data.train_y) // batch)
    for i in range(steps + 1):
        started = time.perf_counter()
        step_all(units, data, order, 0, i % per_epoch, batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def other_job(stop) -> None:
    """Another job sharing the cores: 2-thread matmuls until told to stop."""
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def measure_threads(steps: int) -> list[tuple]:
    rows = []
    for name in ("two-moons MLP, depth 10, K=8", "CIFAR ResNet-20, K=4"):
        specs, data = pack(*WORKLOADS[name])
        fuse = specs[0].model == "mlp"
        for loaded in (False, True):
            spawn = multiprocessing.get_context("spawn")  # a forked child would inherit torch's thread pool
            stop = spawn.Event()
            job = spawn.Process(target=other_job, args=(stop,), daemon=True) if loaded else None
            if job:
                job.start()
                time.sleep(3.0)  # the other job has imported torch and is busy
            for threads in (1, 2):
                torch.set_num_threads(threads)
                rows.append((name, f"loaded (load avg {os.getloadavg()[0]:.1f})" if loaded else
                             f"quiet (load avg {os.getloadavg()[0]:.1f})", threads,
                             seconds_per_step(specs, data, fuse, steps)))
            if job:
                stop.set()
                job.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--part", choices=("fuse", "threads", "both"), default="both")
    args = parser.parse_args()
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")

    if args.part in ("fuse", "both"):
        print("\n(a) fused against in turn, CPU, 1 thread (s per step of the pack)\n")
        print("| workload | fused | in turn | in turn / fused |")
        print("|---|---|---|---|", flush=True)
        torch.set_num_threads(1)
        for name, (options, k) in WORKLOADS.items():
            specs, data = pack(options, k)
            fused, alone = (seconds_per_step(specs, data, f, args.steps) for f in (True, False))
            print(f"| {name} | {fused:.4f} | {alone:.4f} | {alone / fused:.2f} |", flush=True)
    if args.part in ("threads", "both"):
        print("\n(b) threads, quiet and loaded (s per step of the pack)\n")
        print("| workload | machine | threads | s per step | 2 threads / 1 |")
        print("|---|---|---|---|---|", flush=True)
        rows = measure_threads(args.steps)
        for i, (name, machine, threads, seconds) in enumerate(rows):
            ratio = f"{seconds / rows[i - 1][3]:.2f}" if threads == 2 else ""  # the row before: 1 thread
            print(f"| {name} | {machine} | {threads} | {seconds:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
