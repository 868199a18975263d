"""Run a list of RunSpecs through the engine and record everything in the store.

The order of work per run: skip it if the store already holds its result, otherwise mark it
`running`, train (resuming from its checkpoint), write its epoch rows after every epoch and its
final row at the end. An exception inside one run marks that run `failed` and the next one starts;
Ctrl-C propagates after the last finished epoch is safely checkpointed.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from typing import Protocol

import torch

from . import __version__
from . import data as D
from . import engine
from .spec import Execution, RunSpec
from .store import FINAL_STATUSES, Store, config_columns, now_iso


class Reporter(Protocol):
    def run_started(self, spec: RunSpec, index: int, total: int, resumed_epochs: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def epoch(self, spec: RunSpec, record: engine.EpochRecord) -> None: ...
    def run_finished(self, spec: RunSpec, row: dict, reused: bool) -> None: ...


class Silent:
    def run_started(self, spec, index, total, resumed_epochs): pass
    def step(self, done, total): pass
    def epoch(self, spec, record): pass
    def run_finished(self, spec, row, reused): pass


def load_all(runs: list[RunSpec], execution: Execution) -> dict[tuple, D.Data]:
    """Every dataset the runs need, loaded (on the CPU) before anything is written anywhere."""
    loaded: dict[tuple, D.Data] = {}
    for spec in runs:
        key = D.data_key(spec)
        if key not in loaded:
            loaded[key] = D.load(spec, execution.data_dir)
    return loaded


def result_row(spec: RunSpec, outcome: engine.Outcome | None, base: dict) -> dict:
    row = {"run_id": spec.run_id, **config_columns(spec), **base}
    if outcome is not None:
        best = outcome.best
        row.update(
            status=outcome.status,
            final_test_acc=outcome.final_test_acc,
            best_test_acc=best.test_acc if best else None,
            best_epoch=best.epoch if best else None,
            epochs_done=len(outcome.history),
            diverged_epoch=outcome.diverged_epoch,
            diverged_step=outcome.diverged_step,
            seconds=outcome.seconds,
        )
    return row


def execute(runs: list[RunSpec], execution: Execution, datasets: dict[tuple, D.Data],
            reporter: Reporter | None = None) -> list[dict]:
    """Train (or reuse) every run; return one store row per run, in order."""
    reporter = reporter or Silent()
    device = engine.resolve_device(execution.device)
    store = Store(execution.store)
    on_device: dict[tuple, D.Data] = {}
    rows = []
    for i, spec in enumerate(runs):
        existing = store.get_run(spec.run_id)
        if existing and existing["status"] in FINAL_STATUSES and not execution.force:
            reporter.run_finished(spec, existing, reused=True)
            rows.append(existing)
            continue
        if execution.force:
            store.delete_run(spec.run_id)
            existing = None

        key = D.data_key(spec)
        if key not in on_device:
            on_device.clear()  # keep one dataset on the device at a time
            on_device[key] = datasets[key].to(device)
        data = on_device[key]
        base = {
            **engine.describe(spec, data.input_shape, data.num_classes),
            "device": str(device),
            "torch_version": torch.__version__,
            "robustres_version": __version__,
            "created_at": existing["created_at"] if existing else now_iso(),
        }
        checkpoint = store.checkpoint_path(spec.run_id)
        resumed = engine.load_checkpoint(checkpoint)
        done_before = len(resumed["history"]) if resumed else 0
        store.put_run({**result_row(spec, None, base), "status": "running", "epochs_done": done_before})
        reporter.run_started(spec, i, len(runs), done_before)

        history: list[dict] = [dict(r) for r in resumed["history"]] if resumed else []

        def on_epoch(record: engine.EpochRecord, spec=spec, history=history, base=base) -> None:
            history.append(asdict(record))
            store.put_epochs(spec.run_id, history)
            store.put_run({**result_row(spec, None, base), "status": "running", "epochs_done": len(history),
                           "seconds": sum(r["seconds"] for r in history)})
            reporter.epoch(spec, record)

        started = time.perf_counter()
        try:
            outcome = engine.train(spec, data, device, checkpoint, on_epoch=on_epoch, on_step=reporter.step)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken run must not take the others down
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            row = {**result_row(spec, None, base), "status": "failed", "error": detail,
                   "epochs_done": len(history), "seconds": time.perf_counter() - started}
            store.put_run(row)
            reporter.run_finished(spec, row, reused=False)
            rows.append(store.get_run(spec.run_id) or row)
            continue
        row = result_row(spec, outcome, base)
        store.put_epochs(spec.run_id, [asdict(r) for r in outcome.history])
        store.put_run(row)
        reporter.run_finished(spec, row, reused=False)
        rows.append(store.get_run(spec.run_id) or row)
    return rows
