"""Train a list of runs with the executor the user chose.

`train_runs` begins with the pre-flight (preflight.py: every dataset loaded, missing data and
limits larger than the data answered before anything is written, every run given its data's
fingerprint, which is part of its id), then runs training rounds (a session each) through the
driver that fits: this process, one worker process per device, or Ray; and comes back for runs
that another process sharing the store was training (session.until_done).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from ..devices import use_threads, worker_devices
from ..spec import Execution, RunSpec
from .local import train_here
from .preflight import preflight
from .runner import Reporter
from .session import Session, open_session, until_done

OnWait = Callable[[int, list[dict]], None]
Driver = Callable[[Session, Execution, dict, Reporter], None]


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
    use_threads(execution)
    ready = preflight(runs, execution)
    runs, datasets = ready.runs, ready.datasets
    drive = pick_driver(execution)

    def train_round(some: list[RunSpec], ex: Execution) -> list[dict | None]:
        with open_session(some, ex, reporter) as session:
            if session.todo:
                drive(session, ex, datasets, reporter)
            return session.rows_in_order()

    return until_done(train_round, runs, execution, on_wait)
