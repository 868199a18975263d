"""Run a list of RunSpecs through the engine, pack by pack, and record everything in the store.

Per run: skip it if the store already holds its result; otherwise it joins a pack (plan.py), is
marked `running`, trains (resuming from its checkpoint), gets its epoch rows written after every
epoch and its final row at the end. An exception inside a pack marks that pack's runs `failed` and
the next pack starts; a CUDA out-of-memory error first retries the pack split in halves. Ctrl-C
propagates after the last finished epoch is safely checkpointed.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import torch

from . import __version__, engine, tuning
from . import data as D
from .checkpoints import load_checkpoint
from .claims import Claims
from .devices import resolve_device
from .plan import Pack, by_data, data_key, pack_size, plan_group
from .spec import Execution, RunSpec
from .store import FINAL_STATUSES, Store, StoreError, config_columns, now_iso
from .units import Options


class Reporter(Protocol):
    def pack_started(self, pack: Pack, index: int, total: int, fused: bool) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def epoch(self, spec: RunSpec, record: engine.EpochRecord) -> None: ...
    def run_finished(self, spec: RunSpec, row: dict, reused: bool) -> None: ...


class Silent:
    def pack_started(self, pack, index, total, fused): pass
    def step(self, done, total): pass
    def epoch(self, spec, record): pass
    def run_finished(self, spec, row, reused): pass


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


def match_unfingerprinted(runs: list[RunSpec], execution: Execution) -> list[RunSpec]:
    """Runs stored before runs had a data fingerprint keep being found: a run whose id the store does
    not hold, but holds its id without the fingerprint, is that stored run (its data unchecked).
    One warning line for all of them."""
    store = Store(execution.store)
    out, matched = [], 0
    for spec in runs:
        if spec.data_fingerprint is not None and not store.has_run(spec.run_id):
            old = spec.with_(data_fingerprint=None)
            if store.has_run(old.run_id):
                spec, matched = old, matched + 1
        out.append(spec)
    if matched:
        store.warn(f"{matched} run(s) in {store.root} were stored without a data fingerprint (by an older "
                   f"robustres): matched by their config alone, without checking that the data is the same")
    return out


def engine_options(execution: Execution) -> Options:
    return Options(fuse=execution.fuse, compile=execution.compile, checkpoint_seconds=execution.checkpoint_every,
                   track_layers=execution.track_layers, track_every=execution.track_every,
                   stop_at=execution.stop_at)


def result_row(spec: RunSpec, outcome: engine.Outcome | None, base: dict) -> dict:
    row = {"run_id": spec.run_id, **config_columns(spec), **base}
    if outcome is not None:
        best = outcome.best
        row.update(
            status=outcome.status if outcome.finished else "running",  # paused at a rung: it resumes
            final_test_acc=outcome.final_test_acc,
            best_test_acc=best.test_acc if best else None,
            best_epoch=best.epoch if best else None,
            epochs_done=len(outcome.history),
            diverged_epoch=outcome.diverged_epoch,
            diverged_step=outcome.diverged_step,
            seconds=outcome.seconds,
            execution=None if outcome.fused is None else "fused" if outcome.fused else "in turn",
        )
    return row


def running_row(spec: RunSpec, base: dict, history: list[dict]) -> dict:
    """The row of a run in training: what its checkpoint holds (the store follows the checkpoints)."""
    return {**result_row(spec, None, base), "status": "running", "epochs_done": len(history),
            "seconds": sum(r["seconds"] for r in history) if history else None}


def failed_row(spec: RunSpec, store: Store, detail: str, base: dict | None = None,
               seconds: float | None = None) -> dict:
    """The row of a run whose pack failed (an exception, a dead worker or task): what the store
    already knows of it, status `failed` and the error."""
    existing = store.get_run(spec.run_id) or {}
    kept = {k: existing[k] for k in ("params", "flops_per_image", "device", "threads", "torch_version",
                                     "robustres_version", "created_at", "epochs_done", "seconds")
            if existing.get(k) is not None}
    row = {**result_row(spec, None, {**kept, **(base or {})}), "status": "failed", "error": detail}
    row.setdefault("epochs_done", 0)
    if seconds is not None:
        row["seconds"] = seconds
    return row


def record_failed(specs, store: Store, reporter: "Reporter", detail: str, rows: dict | None = None,
                  base: dict | None = None, seconds: float | None = None) -> list[dict]:
    """Store the failed rows of `specs` and report them; returns the rows as stored."""
    out = []
    for spec in specs:
        row = failed_row(spec, store, detail, base, seconds)
        store.put_run(row)
        reporter.run_finished(spec, row, reused=False)
        out.append(store.get_run(spec.run_id) or row)
        if rows is not None:
            rows[spec.run_id] = out[-1]
    return out


# Fault injection for the kill suite and its test: with ROBUSTRES_TEST_KILL=final-checkpoint the
# process kills itself (SIGKILL) right after a run's last epoch is checkpointed and its row says
# `running` at epochs_done == epochs, before the final row: the one moment a random kill rarely hits.
KILL_SWITCH = "ROBUSTRES_TEST_KILL"


def _store_full(exc: OSError, store: Store) -> bool:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return True
    return exc.filename is not None and str(store.root.resolve()) in str(Path(exc.filename).resolve())


class PackRunner:
    """Trains one pack and keeps the store in step with it (every executor's way to train a pack)."""

    def __init__(self, store: Store, device: torch.device, options: Options, reporter: Reporter):
        self.store, self.device, self.options, self.reporter = store, device, options, reporter
        if os.environ.get(KILL_SWITCH):  # a stray test setting must not kill real work unannounced
            store.warn(f"${KILL_SWITCH} is set: this process kills itself after a run's last checkpoint "
                       "(fault injection for tests)")

    def run(self, pack: Pack, data: D.Data, cpu_data: D.Data) -> list[dict]:
        store, specs = self.store, list(pack.runs)
        bases, histories = [], []
        for spec in specs:
            existing = store.get_run(spec.run_id)
            bases.append({
                **engine.describe(spec, cpu_data.input_shape, cpu_data.num_classes),
                "device": str(self.device),
                "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "torch_version": torch.__version__,
                "robustres_version": __version__,
                "created_at": existing["created_at"] if existing else now_iso(),
            })
            saved = load_checkpoint(store.checkpoint_path(spec.run_id), spec.run_id)
            histories.append([dict(r) for r in saved["history"]] if saved else [])
            store.put_run(running_row(spec, bases[-1], histories[-1]))

        def on_epoch(i: int, record: engine.EpochRecord, checkpointed: bool) -> None:
            spec = specs[i]
            histories[i].append(asdict(record))
            self.reporter.epoch(spec, record)
            if not checkpointed:  # the store follows the checkpoints: both or neither
                return
            store.put_epochs(spec.run_id, histories[i])
            store.put_run(running_row(spec, bases[i], histories[i]))
            if len(histories[i]) == spec.epochs and os.environ.get(KILL_SWITCH) == "final-checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)  # the kill suite's exact moment (see KILL_SWITCH)

        started = time.perf_counter()
        try:
            outcomes = engine.train(specs, data, self.device, [store.checkpoint_path(s.run_id) for s in specs],
                                    on_epoch=on_epoch, on_step=self.reporter.step, options=self.options)
        except KeyboardInterrupt:
            raise
        except OSError as exc:
            if _store_full(exc, store):  # a full or read-only store fails every pack: stop now
                raise StoreError(f"cannot write {exc.filename or store.root}: {exc.strerror or exc}") from None
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return self._failed(specs, bases, histories, detail, started)
        except torch.cuda.OutOfMemoryError:
            if len(specs) == 1:
                return self._failed(specs, bases, histories, "CUDA out of memory with a pack of one", started)
            torch.cuda.empty_cache()
            half = len(specs) // 2
            return (self.run(Pack(pack.runs[:half], pack.start_epoch), data, cpu_data)
                    + self.run(Pack(pack.runs[half:], pack.start_epoch), data, cpu_data))
        except Exception as exc:  # one broken pack must not take the others down
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return self._failed(specs, bases, histories, detail, started)
        rows = []
        for spec, outcome, base in zip(specs, outcomes, bases):
            row = result_row(spec, outcome, base)
            store.put_epochs(spec.run_id, [asdict(r) for r in outcome.history])
            if outcome.layer_stats:
                store.put_layer_stats(spec.run_id, outcome.layer_stats)
            store.put_run(row)
            self.reporter.run_finished(spec, row, reused=False)
            rows.append(store.get_run(spec.run_id) or row)
        return rows

    def _failed(self, specs, bases, histories, detail: str, started: float) -> list[dict]:
        seconds = time.perf_counter() - started
        return [record_failed([spec], self.store, self.reporter, detail,
                              base={**base, "epochs_done": len(history)}, seconds=seconds)[0]
                for spec, base, history in zip(specs, bases, histories)]


@dataclass
class Survey:
    """What the store already holds for a list of runs; reading it writes nothing."""

    finished: dict[str, dict]  # run_id -> row, completed or diverged
    todo: list[RunSpec]
    epochs_done: dict[str, int]  # run_id -> epochs in its checkpoint
    elsewhere: dict[str, dict] = field(default_factory=dict)  # run_id -> the live process training it
    claims: Claims | None = None  # the claims this process holds on `todo` (see `begin`)
    requested: list[RunSpec] = field(default_factory=list)  # every run asked for: packs are cut from these

    def release(self, specs) -> None:
        if self.claims is not None:
            self.claims.release([s.run_id for s in specs])

    def release_all(self) -> None:
        if self.claims is not None:
            self.claims.release_all()


def survey(runs: list[RunSpec], execution: Execution, checkpoints: bool = True) -> Survey:
    """Which runs are finished; for the others, how far their checkpoints got (unless told not to
    look: reading every checkpoint of a big sweep takes a while)."""
    store = Store(execution.store)
    finished, todo, done = {}, [], {}
    for spec in runs:
        existing = store.get_run(spec.run_id)
        if existing and not execution.force and (existing["status"] in FINAL_STATUSES
                                                 or reached_stop(existing, spec, execution.stop_at)):
            finished[spec.run_id] = existing
            continue
        todo.append(spec)
        saved = None if execution.force or not checkpoints else load_checkpoint(
            store.checkpoint_path(spec.run_id), spec.run_id)
        done[spec.run_id] = len(saved["history"]) if saved else 0
    return Survey(finished, todo, done, requested=list(runs))


def reached_stop(row: dict, spec: RunSpec, stop_at: int | None) -> bool:
    """A run paused (or stopped) at or after the epoch this training stops at has nothing to do, unless
    its schedule's end is reached (by the stop, or by the run): a run is finished only by its final
    row. (A kill between the last epoch's checkpoint and the final row leaves `running` at
    epochs_done == epochs; counted as done, it stayed `running` forever and a search's answer lost
    it.) Training it again trains no epoch: the engine resumes at the end and writes the final row."""
    done = row.get("epochs_done") or 0
    if stop_at is None or stop_at >= spec.epochs or (row["status"] == "running" and done >= spec.epochs):
        return False
    return row["status"] in ("running", "stopped") and done >= stop_at


_FLOPS: dict[tuple, int] = {}


def flops_per_image(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> int:
    key = (spec.model, spec.depth, spec.width, spec.hidden, spec.bn, input_shape, num_classes)
    if key not in _FLOPS:
        _FLOPS[key] = engine.describe(spec, input_shape, num_classes)["flops_per_image"]
    return _FLOPS[key]


def begin(runs: list[RunSpec], execution: Execution, reporter: Reporter) -> tuple[Store, Survey, dict]:
    """What every executor does first: claim the runs to train, report the finished ones, tidy
    the store for the rest.

    Runs that another live process is training (two sweeps sharing a store) are left out of
    `todo` and listed in `elsewhere`; the executor must call `work.release(...)` as packs finish
    and `work.release_all()` at the end, and `until_done` comes back for the runs elsewhere.
    """
    store = Store(execution.store)
    work = survey(runs, execution, checkpoints=False)
    if work.todo:
        claims = Claims(store)
        mine, elsewhere = claims.take([s.run_id for s in work.todo])
        mine = set(mine)
        # Look again now that the runs are ours: another process may have finished one meanwhile.
        again = survey([s for s in work.todo if s.run_id in mine], execution)
        work = Survey({**work.finished, **again.finished}, again.todo, again.epochs_done, elsewhere, claims,
                      requested=list(runs))
        claims.release(list(again.finished))
    Claims(store).clear_stale(list(work.finished))
    rows: dict[str, dict] = dict(work.finished)
    for spec in runs:
        if spec.run_id in work.finished:
            reporter.run_finished(spec, work.finished[spec.run_id], reused=True)
    if work.todo:
        store.remove_stale_temporaries()
        for spec in work.todo:
            path = store.checkpoint_path(spec.run_id)
            if not execution.force and not work.epochs_done.get(spec.run_id) and path.exists():
                store.warn(f"unreadable checkpoint {path} (damaged, or another run's): "
                           f"run {spec.run_id} trains from scratch")
        if execution.force:
            for spec in work.todo:
                store.delete_run(spec.run_id)
    return store, work, rows


def until_done(execute_some: Callable[[list[RunSpec], Execution], list[dict | None]], runs: list[RunSpec],
               execution: Execution, on_wait: Callable[[int, list[dict]], None] | None = None,
               poll_seconds: float = 0.5) -> list[dict]:
    """Run an executor until every run has a row: runs that another process was training (None
    rows) are taken up again as soon as their claims are released or go stale, and then either
    reported from the store (that process finished them) or trained here (it died)."""
    rows = dict(zip([s.run_id for s in runs], execute_some(runs, execution)))
    execution = replace(execution, force=False)  # what the other process trained is fresh
    while True:
        pending = [s for s in runs if rows[s.run_id] is None]
        if not pending:
            return [rows[s.run_id] for s in runs]
        claims = Claims(Store(execution.store))
        holders = [h for h in (claims.holder(s.run_id) for s in pending) if h is not None]
        if on_wait is not None:
            on_wait(len(pending), holders)
        while all(claims.holder(s.run_id) is not None for s in pending):
            time.sleep(poll_seconds)
        rows.update(zip([s.run_id for s in pending], execute_some(pending, execution)))


def execute(runs: list[RunSpec], execution: Execution, datasets: dict[tuple, D.Data],
            reporter: Reporter | None = None) -> list[dict]:
    """Train (or reuse) every run in this process; one store row per run, in the order given (None
    for runs another process holds, see `until_done`)."""
    reporter = reporter or Silent()
    device = resolve_device(execution.device)
    options = engine_options(execution)
    store, work, rows = begin(runs, execution, reporter)
    try:
        runner = PackRunner(store, device, options, reporter)
        todo = {spec.run_id for spec in work.todo}
        for group in by_data(runs):  # one dataset on the device at a time
            if not any(spec.run_id in todo for spec in group):
                continue
            key = data_key(group[0])
            data = datasets[key].to(device)
            measured = None if execution.pack_size else tuning.auto_pack_size(group, data, device, options)
            shape, classes = data.input_shape, data.num_classes
            flops = lambda spec: flops_per_image(spec, shape, classes)  # noqa: E731
            packs = [p for p, _ in plan_group(group, pack_size(execution.pack_size, group, measured),
                                              work.epochs_done, flops, len(data.train_y), work.todo)]
            for index, pack in enumerate(packs):
                fused = tuning.choose_fuse(pack.runs, device, options)
                reporter.pack_started(pack, index, len(packs), fused)
                for row in runner.run(pack, data, datasets[key]):
                    rows[row["run_id"]] = row
                work.release(pack.runs)
            del data
    finally:
        work.release_all()
    if work.todo:
        store.refresh()
    return [rows.get(spec.run_id) for spec in runs]
