"""The one pack runner, and every row a run gets.

`PackRunner.run` trains a pack here: `start` (each run's base row, its `running` row at the epoch
its checkpoint holds), the engine, then `finish` (epochs, layer statistics, the final row) or
`fail`. A driver whose packs train elsewhere (a Ray task) calls the same `start`, `finish` and
`fail` with what came back, so a row looks the same whichever executor trained it.

Invariants:
- Rows are built only here, each on top of `base_row`: the run's config, its model's size, where
  it trained (`device` as the driver names it, `threads`: torch's CPU threads there, None on a GPU),
  the versions and when the run was first stored.
- The store follows the checkpoints: a `running` row is written after the checkpoint it describes,
  and a failed row's `epochs_done` is what the run's stored checkpoint holds (where it resumes).
- One pack's exception fails that pack's runs only, with the exception's one-line text; a full or
  read-only store raises StoreError (every pack would fail); Ctrl-C propagates after the last
  finished epoch is safely checkpointed; CUDA out of memory first retries the pack in halves.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch

from .. import __version__, engine, tuning
from .. import data as D
from ..checkpoints import load_checkpoint
from ..errors import SIGNALS
from ..spec import Execution, RunSpec
from ..store import Store, StoreError, config_columns, now_iso
from ..units import Options
from .plan import Pack


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


def engine_options(execution: Execution) -> Options:
    """The engine's options for every driver (a Ray task builds them from the same Execution)."""
    return Options(fuse=execution.fuse, compile=execution.compile, checkpoint_seconds=execution.checkpoint_every,
                   track_layers=execution.track_layers, track_every=execution.track_every,
                   stop_at=execution.stop_at)


# Fault injection for the kill suite and its test: with ROBUSTRES_TEST_KILL=final-checkpoint the
# process kills itself (SIGKILL) right after a run's last epoch is checkpointed and its row says
# `running` at epochs_done == epochs, before the final row: the one moment a random kill rarely hits.
KILL_SWITCH = "ROBUSTRES_TEST_KILL"

# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a pack trained, as its rows record it."""

    device: str  # the driver's name for it: cpu, cuda:0, ray:cpu (`ray` while a task is pending)
    threads: int | None  # torch's CPU threads there; None on a GPU, or not known yet


def where_here(device: torch.device) -> Where:
    """This process training on `device` (call it where the pack trains: threads are per process)."""
    return Where(str(device), torch.get_num_threads() if device.type == "cpu" else None)


def base_row(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int, where: Where,
             existing: dict | None) -> dict:
    """What every row of the run holds, whatever its status."""
    return {"run_id": spec.run_id, **config_columns(spec), **engine.describe(spec, input_shape, num_classes),
            "device": where.device, "threads": where.threads, "torch_version": torch.__version__,
            "robustres_version": __version__, "created_at": existing["created_at"] if existing else now_iso()}


def stored_base(spec: RunSpec, existing: dict | None) -> dict:
    """The base row of a run this process did not start (a worker process did, or nobody): what
    the store knows of it."""
    kept = {k: existing[k] for k in ("params", "flops_per_image", "device", "threads", "torch_version",
                                     "robustres_version", "created_at", "seconds")
            if existing and existing.get(k) is not None}
    return {"run_id": spec.run_id, **config_columns(spec), **kept}


def execution_name(fused: bool | None) -> str | None:
    """The `execution` column: how a pack executed (None: not known, an older checkpoint)."""
    return None if fused is None else "fused" if fused else "in turn"


def running_row(base: dict, history: list[dict]) -> dict:
    """A run in training: what its checkpoint holds."""
    return {**base, "status": "running", "epochs_done": len(history),
            "seconds": sum(r["seconds"] for r in history) if history else None}


def final_row(base: dict, outcome: engine.Outcome) -> dict:
    """A run the engine returned: completed, diverged, or paused at a rung (`running`, it resumes)."""
    best = outcome.best
    return {**base, "status": outcome.status if outcome.finished else "running",
            "final_test_acc": outcome.final_test_acc, "best_test_acc": best.test_acc if best else None,
            "best_epoch": best.epoch if best else None, "epochs_done": len(outcome.history),
            "diverged_epoch": outcome.diverged_epoch, "diverged_step": outcome.diverged_step,
            "seconds": outcome.seconds,
            "execution": execution_name(outcome.fused)}


def failed_row(base: dict, checkpointed: dict, detail: str, seconds: float | None) -> dict:
    """A run whose pack failed (an exception, a dead worker or task), at its checkpoint."""
    row = {**base, **checkpointed, "status": "failed", "error": detail}
    return row if seconds is None else {**row, "seconds": seconds}


def failure(exc: BaseException) -> str:
    """An exception as a failed row's `error`: its last line, as Python prints it."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def checkpointed(store: Store, spec: RunSpec) -> tuple[list[dict], dict]:
    """The run's stored checkpoint: its epoch rows, and what a row says of it (epochs, execution)."""
    saved = load_checkpoint(store.checkpoint_path(spec.run_id), spec.run_id) or {}
    history = list(saved.get("history", []))
    return history, {"epochs_done": len(history), "execution": execution_name(saved.get("fused"))}


def _store_full(exc: OSError, store: Store) -> bool:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return True
    return exc.filename is not None and str(store.root.resolve()) in str(Path(exc.filename).resolve())


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


class PackRunner:
    """Trains packs on `device` and keeps the store in step with them; the only writer of rows.

    `device` is where `run` trains, and what `announce` asks the fuse rule about (a driver of
    remote tasks passes the device type its tasks get)."""

    def __init__(self, store: Store, device: torch.device, options: Options, reporter: Reporter):
        self.store, self.device, self.options, self.reporter = store, device, options, reporter
        self.bases: dict[str, dict] = {}  # run_id -> base row, from `start` to `finish` or `fail`
        if os.environ.get(KILL_SWITCH):  # a stray test setting must not kill real work unannounced
            store.warn(f"${KILL_SWITCH} is set: this process kills itself after a run's last checkpoint "
                       "(fault injection for tests)")

    def announce(self, pack: Pack, index: int, total: int) -> None:
        self.reporter.pack_started(pack, index, total, tuning.choose_fuse(pack.runs, self.device, self.options))

    def start(self, pack: Pack, input_shape: tuple[int, ...], num_classes: int, where: Where) -> list[list[dict]]:
        """Store the pack's runs as `running` at their checkpoints' epoch; returns those histories."""
        histories = []
        for spec in pack.runs:
            self.bases[spec.run_id] = base_row(spec, input_shape, num_classes, where, self.store.get_run(spec.run_id))
            saved = load_checkpoint(self.store.checkpoint_path(spec.run_id), spec.run_id)
            histories.append([dict(r) for r in saved["history"]] if saved else [])
            self.store.put_run(running_row(self.bases[spec.run_id], histories[-1]))
        return histories

    def finish(self, pack: Pack, outcomes: list[engine.Outcome], where: Where | None = None) -> list[dict]:
        """Store what the engine returned for each run (its epochs, layer statistics, final row)."""
        rows = []
        for spec, outcome in zip(pack.runs, outcomes):
            row = final_row(self._base(spec, where), outcome)
            self.store.put_epochs(spec.run_id, [asdict(r) for r in outcome.history])
            if outcome.layer_stats:
                self.store.put_layer_stats(spec.run_id, outcome.layer_stats)
            if outcome.scales:  # h rule learned (a Ray task's outcomes carry them too)
                self.store.put_learned_scales(spec.run_id, outcome.scales)
            rows.append(self._put(spec, row))
        return rows

    def fail(self, pack: Pack, detail: str, where: Where | None = None, seconds: float | None = None) -> list[dict]:
        """Store the pack's runs as failed, each at what its stored checkpoint holds (where it resumes),
        with that checkpoint's epoch rows (a Ray task's come back only with its checkpoints)."""
        rows = []
        for spec in pack.runs:
            history, progress = checkpointed(self.store, spec)
            if history:
                self.store.put_epochs(spec.run_id, history)
            rows.append(self._put(spec, failed_row(self._base(spec, where), progress, detail, seconds)))
        return rows

    def _base(self, spec: RunSpec, where: Where | None) -> dict:
        base = self.bases.pop(spec.run_id, None) or stored_base(spec, self.store.get_run(spec.run_id))
        return base if where is None else {**base, "device": where.device, "threads": where.threads}

    def _put(self, spec: RunSpec, row: dict) -> dict:
        self.store.put_run(row)
        self.reporter.run_finished(spec, row, reused=False)
        return self.store.get_run(spec.run_id) or row

    def run(self, pack: Pack, data: D.Data, cpu_data: D.Data) -> list[dict]:
        """Train the pack here on `data` (on the device; `cpu_data` describes it); its rows as stored."""
        histories = self.start(pack, cpu_data.input_shape, cpu_data.num_classes, where_here(self.device))
        started = time.perf_counter()
        try:
            paths = [self.store.checkpoint_path(spec.run_id) for spec in pack.runs]
            outcomes = engine.train(pack.runs, data, self.device, paths, on_epoch=self._recorder(pack, histories),
                                    on_step=self.reporter.step, options=self.options)
        except KeyboardInterrupt:
            raise
        except OSError as exc:
            if _store_full(exc, self.store):  # a full or read-only store fails every pack: stop now
                raise StoreError(f"cannot write {exc.filename or self.store.root}: {exc.strerror or exc}") from None
            return self.fail(pack, failure(exc), seconds=time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            if pack.k == 1:
                return self.fail(pack, "CUDA out of memory with a pack of one", seconds=time.perf_counter() - started)
            torch.cuda.empty_cache()
            half = pack.k // 2
            return (self.run(Pack(pack.runs[:half], pack.start_epoch), data, cpu_data)
                    + self.run(Pack(pack.runs[half:], pack.start_epoch), data, cpu_data))
        except Exception as exc:  # one broken pack must not take the others down
            if SIGNALS:  # after Ctrl-C: the interrupt's doing, and the runs resume, not fail
                raise KeyboardInterrupt from exc
            return self.fail(pack, failure(exc), seconds=time.perf_counter() - started)
        return self.finish(pack, outcomes)

    def _recorder(self, pack: Pack, histories: list[list[dict]]) -> engine.OnEpoch:
        """The engine's epoch callback: report every epoch, store the checkpointed ones."""
        def on_epoch(i: int, record: engine.EpochRecord, checkpointed: bool) -> None:
            spec = pack.runs[i]
            histories[i].append(asdict(record))
            self.reporter.epoch(spec, record)
            if not checkpointed:  # the store follows the checkpoints: both or neither
                return
            self.store.put_epochs(spec.run_id, histories[i])
            self.store.put_run(running_row(self.bases[spec.run_id], histories[i]))
            if len(histories[i]) == spec.epochs and os.environ.get(KILL_SWITCH) == "final-checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)  # the kill suite's exact moment (see KILL_SWITCH)

        return on_epoch
