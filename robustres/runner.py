"""Train a list of runs with the executor the user chose, or plan them without training.

`train_runs` loads every dataset first (missing data is bad input, found before anything is
written) and gives every run its data's fingerprint, which is part of its id (runs stored before
fingerprints are matched without it), then hands the runs to the local executor, the local worker
processes (one per GPU) or Ray, and comes back for runs that another process sharing the store was
training. `dry_run` makes the same plan the executors make (plan.py) and prices it, writing
nothing; without the data it says what it cannot know.
"""

from __future__ import annotations

import sys
from typing import Callable

from . import data as D
from . import engine, executor
from .datasets import DATASETS, data_key, family_of, train_examples
from .devices import resolve_device, use_threads, worker_devices
from .hardware import estimate, wall_time
from .models import init_model
from .plan import by_data, pack_size, plan_group
from .spec import Execution, RunSpec, SpecError
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
    """Train (or reuse) every run; one store row per run, in the order given. The runs get their
    data's fingerprint first (it is part of their ids), before the store is asked about them."""
    check_tracked_layers(runs, execution)
    use_threads(execution)
    datasets = executor.load_all(runs, execution)
    runs = [spec.with_(data_fingerprint=datasets[data_key(spec)].fingerprint) for spec in runs]
    runs = executor.match_unfingerprinted(runs, execution)
    warn_class_gaps(runs, datasets)
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


def warn_class_gaps(runs: list[RunSpec], datasets: dict[tuple, D.Data]) -> None:
    """One warning line per dataset read from files with a class that has no training or no test
    examples (generated data are what their spec says)."""
    seen = set()
    for spec in runs:
        key = data_key(spec)
        if DATASETS[spec.dataset].generated or key in seen:
            continue
        seen.add(key)
        gap = D.class_gaps(datasets[key])
        if gap:
            print(f"warning: {gap}", file=sys.stderr)


def plan_sources(runs: list[RunSpec], execution: Execution) -> tuple[list[RunSpec], dict[tuple, D.Source]]:
    """For dry runs: each data source described once (read if it is there, see D.describe_source),
    and the runs with its fingerprint, matched as training matches them."""
    sources: dict[tuple, D.Source] = {}
    for spec in runs:
        if data_key(spec, limited=False) not in sources:
            sources[data_key(spec, limited=False)] = D.describe_source(spec, execution.data_dir)
    runs = [spec.with_(data_fingerprint=sources[data_key(spec, limited=False)].fingerprint) for spec in runs]
    return executor.match_unfingerprinted(runs, execution), sources


def dry_run(runs: list[RunSpec], execution: Execution) -> dict:
    """The plan: runs total / done / to do, and the packs the executors would train, with K,
    device and estimated cost. A plan can be made without the data; training cannot."""
    runs, sources = plan_sources(runs, execution)
    work = executor.survey(runs, execution)
    device = resolve_device(execution.device)
    packs, warnings = [], []
    todo = {spec.run_id for spec in work.todo}
    for group in (g for g in by_data(runs) if any(spec.run_id in todo for spec in g)):
        source = sources[data_key(group[0], limited=False)]
        if source.missing:
            warnings.append(f"{source.missing} (training would stop here); without the data the run ids "
                            f"lack its fingerprint (run_ids null) and the cost is an estimate")
        packs += plan_packs(group, source, work, execution, device)
    return {"runs_total": len(runs), "runs_done": len(work.finished), "runs_todo": len(work.todo),
            "pack_size": execution.pack_size or "auto", "store": str(execution.store), "packs": packs,
            "wall_time": wall_time([p["estimate"] for p in packs]), "warnings": warnings}



def plan_packs(group: list[RunSpec], source: D.Source, work: executor.Survey, execution: Execution,
               device) -> list[dict]:
    """The packs of one data group (of its runs still to train) as the dry run prints them (the
    family's shape and classes stand in for an image folder that is missing, see datasets.py)."""
    family = family_of(group[0].dataset, group[0].synthetic_like)
    shape, classes = source.input_shape or family.input_shape, source.num_classes or family.classes
    measured = None
    if execution.pack_size is None and device.type == "cpu":
        from .tuning import estimated_cpu_fit

        measured = estimated_cpu_fit(group, shape, classes)
    size = pack_size(execution.pack_size, group, measured)
    flops = lambda spec: executor.flops_per_image(spec, shape, classes)  # noqa: E731
    images = train_examples(group[0], source.n_train)
    packs = []
    for pack, cost in plan_group(group, size, work.epochs_done, flops, source.n_train, todo=work.todo):
        first = pack.runs[0]
        packs.append({"dataset": first.dataset, "depth": first.depth, "k": pack.k, "epochs": first.epochs,
                      "start_epoch": pack.start_epoch, "train_images": images,
                      "h": sorted({s.h for s in pack.runs}), "seeds": sorted({s.seed for s in pack.runs}),
                      "train_noise": sorted({s.train_noise for s in pack.runs}), "device": str(device),
                      "tflop": cost / 1e12, "estimate": estimate(first, device.type, cost),
                      "run_ids": None if source.missing else [s.run_id for s in pack.runs]})
    return packs


def describe_runs(runs: list[RunSpec], execution: Execution) -> list[dict]:
    """`train --dry-run`: every run's resolved config with its parameter count and FLOPs. Without
    the data, what depends on it is None and named in `unknown_without_data` (the run id covers the
    data's fingerprint; an image folder's size and classes decide the FLOPs and parameters)."""
    device = resolve_device(execution.device)
    runs, sources = plan_sources(runs, execution)
    source = sources[data_key(runs[0], limited=False)]
    unknown, note = [], None
    if source.missing is not None:
        unknown = ["run_id", "data_fingerprint"] + ([] if source.input_shape else ["params", "flops_per_image"])
        note = (f"? is unknown without the data ({source.missing}): the run id covers the data's fingerprint"
                + ("; params and FLOPs assume AG-NEWS's 1024 characters and 4 classes" if source.input_shape
                   else ", params and FLOPs the images' size and classes"))
    out = []
    for spec in runs:
        numbers = ({"params": None, "flops_per_image": None} if source.input_shape is None
                   else engine.describe(spec, source.input_shape, source.num_classes))
        cost = None if numbers["flops_per_image"] is None else \
            3.0 * numbers["flops_per_image"] * train_examples(spec, source.n_train) * spec.epochs  # as plan.pack_cost
        numbers["estimate"] = estimate(spec, device.type, cost) if cost is not None else \
            {"seconds": None, "rate": "no cost without the data"}
        out.append({"run_id": None if source.missing else spec.run_id, **spec.to_dict(), **numbers,
                    "unknown_without_data": unknown, "data_note": note, "device": str(device),
                    "store": str(execution.store), "data_dir": str(execution.data_dir)})
    return out
