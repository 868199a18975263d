"""Train a list of runs with the executor the user chose.

`train_runs` loads every dataset first (missing data is bad input, found before anything is
written) and gives every run its data's fingerprint, which is part of its id (runs stored before
fingerprints are matched without it), then runs training rounds (a session each) through the
driver that fits: this process, one worker process per device, or Ray; and comes back for runs
that another process sharing the store was training (session.until_done).
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Callable

from .. import data as D
from ..datasets import DATASETS
from ..devices import use_threads, worker_devices
from ..models import init_model
from ..spec import Execution, RunSpec, SpecError
from ..units import weight_layers
from .local import train_here
from .plan import data_key
from .runner import Reporter
from .session import Session, match_unfingerprinted, open_session, until_done

OnWait = Callable[[int, list[dict]], None]
Driver = Callable[[Session, Execution, dict, Reporter], None]


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


def load_all(runs: list[RunSpec], execution: Execution) -> dict[tuple, D.Data]:
    """Every dataset the runs need, loaded (on the CPU) before anything is written anywhere: each
    data source read once, then cut to the runs' --limit-train / --limit-test."""
    sources: dict[tuple, D.Data] = {}
    loaded: dict[tuple, D.Data] = {}
    for spec in runs:
        key, source = data_key(spec), data_key(spec, limited=False)
        if key in loaded:
            continue
        if source not in sources:
            sources[source] = D.load_source(spec, execution.data_dir, (spec.limit_train, spec.limit_test))
        loaded[key] = D.limit(sources[source], spec.limit_train, spec.limit_test)
    return loaded


def pick_driver(execution: Execution) -> Driver:
    """Ray when asked for; worker processes when there are several devices; else this process."""
    if execution.executor == "ray":
        from .ray import train_on_ray

        return train_on_ray
    devices = worker_devices(execution)
    if len(devices) > 1:
        from .workers import train_on_workers

        return partial(train_on_workers, devices=devices)
    return train_here


def train_runs(runs: list[RunSpec], execution: Execution, reporter: Reporter,
               on_wait: OnWait | None = None) -> list[dict]:
    """Train (or reuse) every run; one store row per run, in the order given. The runs get their
    data's fingerprint first (it is part of their ids), before the store is asked about them."""
    check_tracked_layers(runs, execution)
    use_threads(execution)
    datasets = load_all(runs, execution)
    runs = [spec.with_(data_fingerprint=datasets[data_key(spec)].fingerprint) for spec in runs]
    runs = match_unfingerprinted(runs, execution)
    warn_class_gaps(runs, datasets)
    drive = pick_driver(execution)

    def train_round(some: list[RunSpec], ex: Execution) -> list[dict | None]:
        with open_session(some, ex, reporter) as session:
            if session.todo:
                drive(session, ex, datasets, reporter)
            return session.rows_in_order()

    return until_done(train_round, runs, execution, on_wait)


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
