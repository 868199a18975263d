"""Train a list of runs with the executor the user chose, or plan them without training.

`train_runs` loads every dataset first (missing data is bad input, found before anything is
written), then hands the runs to the local executor, the local worker processes (one per GPU) or
Ray, and comes back for runs that another process sharing the store was training. `dry_run`
makes the same plan the executors make (plan.py) and prices it, writing nothing.
"""

from __future__ import annotations

from typing import Callable

from . import data as D
from . import engine, executor
from .devices import resolve_device, use_threads, worker_devices
from .models import init_model
from .plan import by_data, pack_size, plan_group, train_size
from .spec import DataError, Execution, RunSpec, SpecError
from .units import weight_layers

OnWait = Callable[[int, list[dict]], None]


def check_tracked_layers(runs: list[RunSpec], execution: Execution) -> None:
    """--track-layers must name layers every model has: checked before anything is written."""
    if not execution.track_layers:
        return
    seen = set()
    for spec in runs:
        key = (spec.model, spec.depth, spec.width, spec.hidden, spec.bn)
        if key in seen:
            continue
        seen.add(key)
        shape, classes = D.peek(spec, execution.data_dir)
        try:
            weight_layers(init_model(spec, classes, shape), execution.track_layers)
        except ValueError as exc:
            raise SpecError(f"--track-layers: {exc} (depth {spec.depth})") from None


def train_runs(runs: list[RunSpec], execution: Execution, reporter: executor.Reporter,
               on_wait: OnWait | None = None) -> list[dict]:
    """Train (or reuse) every run; one store row per run, in the order given."""
    check_tracked_layers(runs, execution)
    use_threads(execution)
    datasets = executor.load_all(runs, execution)
    if execution.executor == "ray":
        from .ray_executor import execute_ray

        def run_some(some, ex):
            return execute_ray(some, ex, datasets, reporter, execution.ray_address)
    else:
        devices = worker_devices(execution)

        def run_some(some, ex):
            if len(devices) > 1:
                from .workers import execute_workers

                return execute_workers(some, ex, datasets, devices, reporter)
            return executor.execute(some, ex, datasets, reporter)
    return executor.until_done(run_some, runs, execution, on_wait)


_LIKE = {"image": "cifar10", "text": "ag-news", "points": "two-moons"}


def dry_run(runs: list[RunSpec], execution: Execution) -> dict:
    """The plan: runs total / done / to do, and the packs the executors would train, with K,
    device and estimated cost. A plan can be made without the data; training cannot."""
    work = executor.survey(runs, execution)
    device = resolve_device(execution.device)
    packs, warnings = [], []
    for group in by_data(work.todo):
        try:
            shape, classes = D.peek(group[0], execution.data_dir)
        except DataError as exc:
            warnings.append(f"{exc} (training would stop here)")
            stand_in = group[0].with_(dataset="synthetic", synthetic_like=_LIKE[group[0].modality])
            shape, classes = D.peek(stand_in, execution.data_dir)
        measured = None
        if execution.pack_size is None and device.type == "cpu":
            from .tuning import estimated_cpu_fit

            measured = estimated_cpu_fit(group, shape, classes)
        size = pack_size(execution.pack_size, group, measured)
        flops = lambda spec: executor.flops_per_image(spec, shape, classes)  # noqa: E731
        for pack, cost in plan_group(group, size, work.epochs_done, flops):
            first = pack.runs[0]
            packs.append({"dataset": first.dataset, "depth": first.depth, "k": pack.k, "epochs": first.epochs,
                          "start_epoch": pack.start_epoch, "train_images": train_size(first),
                          "h": sorted({s.h for s in pack.runs}), "seeds": sorted({s.seed for s in pack.runs}),
                          "train_noise": sorted({s.train_noise for s in pack.runs}), "device": str(device),
                          "tflop": cost / 1e12, "run_ids": [s.run_id for s in pack.runs]})
    return {"runs_total": len(runs), "runs_done": len(work.finished), "runs_todo": len(work.todo),
            "pack_size": execution.pack_size or "auto", "store": str(execution.store), "packs": packs,
            "warnings": warnings}


def describe_runs(runs: list[RunSpec], execution: Execution) -> list[dict]:
    """`train --dry-run`: every run's resolved config with its parameter count and FLOPs."""
    device = resolve_device(execution.device)
    shape, classes = D.peek(runs[0], execution.data_dir)
    return [{"run_id": spec.run_id, **spec.to_dict(), **engine.describe(spec, shape, classes),
             "device": str(device), "store": str(execution.store), "data_dir": str(execution.data_dir)}
            for spec in runs]
