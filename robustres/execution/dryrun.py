"""The dry run: the plan the drivers would make, priced, without training or writing anything.

Its one pass: the pre-flight that training makes (preflight.py: data described, limits checked,
runs fingerprinted), what the store holds (session.survey, which reads and never writes), then the
packs the drivers would make (plan.py), priced with the engine's measured rates. `describe_runs`
(train --dry-run) lists every run's resolved config, size and cost. Without the data, each says
what it cannot know (the run ids cover the data's fingerprint).
"""

from __future__ import annotations

from .. import data as D
from .. import engine
from ..datasets import data_key, family_of, train_examples
from ..devices import resolve_device
from ..hardware import estimate, wall_time
from ..spec import Execution, RunSpec
from .plan import PER_MODEL_FIELDS, Pack, by_data, flops_per_image, pack_cost, pack_size, plan_group, split_fields
from .preflight import preflight
from .session import Survey, survey


def dry_run(runs: list[RunSpec], execution: Execution) -> dict:
    """The plan: runs total / done / to do, and the packs the drivers would train, with K,
    device and estimated cost. A plan can be made without the data; training cannot."""
    ready = preflight(runs, execution, read=False)
    runs, sources = ready.runs, ready.sources
    work = survey(runs, execution)
    device = resolve_device(execution.device)
    packs, warnings, splits = [], [], []
    todo = {spec.run_id for spec in work.todo}
    for group in (g for g in by_data(runs) if any(spec.run_id in todo for spec in g)):
        source = sources[data_key(group[0], limited=False)]
        if source.missing:
            warnings.append(f"{source.missing} (training would stop here); without the data the run ids "
                            f"lack its fingerprint (run_ids null) and the cost is an estimate")
        packs += plan_packs(group, source, work, execution, device)
        splits += [split_line(group)] if split_fields(group) else []
    return {"runs_total": len(runs), "runs_done": len(work.finished), "runs_todo": len(work.todo),
            "pack_size": execution.pack_size or "auto", "store": str(execution.store), "packs": packs,
            "splits": splits, "wall_time": wall_time([p["estimate"] for p in packs]), "warnings": warnings}


def split_line(group: list[RunSpec]) -> str:
    """Why one data group's runs train in separate packs, in one line."""
    parts = [f"{name} ({', '.join(value_text(v) for v in sorted({getattr(spec, name) for spec in group}))})"
             for name in split_fields(group)]
    return (f"{group[0].dataset}: runs that differ in {' or '.join(parts)} train in separate packs (a pack's "
            f"runs differ only in {', '.join(PER_MODEL_FIELDS)})")


def value_text(value) -> str:
    """A RunSpec value as the flags write it: true/false, milestones 40,60 (or none)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def json_value(value):
    """A RunSpec value for JSON (milestones as a list)."""
    return list(value) if isinstance(value, tuple) else value


def plan_packs(group: list[RunSpec], source: D.Source, work: Survey, execution: Execution,
               device) -> list[dict]:
    """The packs of one data group (of its runs still to train) as the dry run prints them (the
    family's shape and classes stand in for an image folder that is missing, see datasets.py)."""
    family = family_of(group[0].dataset, group[0].synthetic_like)
    shape, classes = source.input_shape or family.input_shape, source.num_classes or family.classes
    measured = None
    if execution.pack_size is None and device.type == "cpu":
        from ..tuning import estimated_cpu_fit

        measured = estimated_cpu_fit(group, shape, classes)
    size = pack_size(execution.pack_size, group, measured)
    flops = lambda spec: flops_per_image(spec, shape, classes)  # noqa: E731
    images = train_examples(group[0], source.n_train)
    split, packs = split_fields(group), []
    for pack, cost in plan_group(group, size, work.epochs_done, flops, source.n_train, todo=work.todo):
        first = pack.runs[0]
        packs.append({"dataset": first.dataset, "depth": first.depth, "k": pack.k, "epochs": first.epochs,
                      "start_epoch": pack.start_epoch, "train_images": images,
                      "h": sorted({s.h for s in pack.runs}), "seeds": sorted({s.seed for s in pack.runs}),
                      "train_noise": sorted({s.train_noise for s in pack.runs}),
                      **{name: sorted({getattr(s, name) for s in pack.runs})
                         for name in ("lr", "momentum", "weight_decay")},
                      "h_rule": sorted({s.h_rule or "fixed" for s in pack.runs}),
                      "split_by": {name: json_value(getattr(first, name)) for name in split},
                      "device": str(device),
                      "tflop": cost / 1e12, "estimate": estimate(first, device.type, cost),
                      "run_ids": None if source.missing else [s.run_id for s in pack.runs]})
    return packs


def describe_runs(runs: list[RunSpec], execution: Execution) -> list[dict]:
    """`train --dry-run`: every run's resolved config with its parameter count and FLOPs. Without
    the data, what depends on it is None and named in `unknown_without_data` (the run id covers the
    data's fingerprint; an image folder's size and classes decide the FLOPs and parameters)."""
    device = resolve_device(execution.device)
    ready = preflight(runs, execution, read=False)
    runs, source = ready.runs, ready.sources[data_key(runs[0], limited=False)]
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
            pack_cost(Pack((spec,)), numbers["flops_per_image"], source.n_train)  # a pack of one, from epoch 0
        numbers["estimate"] = estimate(spec, device.type, cost) if cost is not None else \
            {"seconds": None, "rate": "no cost without the data"}
        out.append({"run_id": None if source.missing else spec.run_id, **spec.to_dict(), **numbers,
                    "unknown_without_data": unknown, "data_note": note, "device": str(device),
                    "store": str(execution.store), "data_dir": str(execution.data_dir)})
    return out
