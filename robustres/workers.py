"""Local worker processes: one per device (every visible GPU), packs queued to whichever is free.

Each worker is a spawned process pinned to its device; it loads the data it needs once, trains
the packs it is handed through the same `PackRunner` as the in-process executor (so it writes its
own runs' rows and checkpoints, one file per run) and sends its progress back to the driver. The
driver watches the workers: when one dies (a segfault, the OOM killer, kill -9), the pack it held
is marked `failed` with the exit code, a fresh worker takes its device, and the sweep goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import traceback
from dataclasses import asdict

from .executor import PackRunner, Reporter, Silent, begin, engine_options, flops_per_image, record_failed
from .plan import Pack, data_key, plan_all
from .spec import Execution, RunSpec
from .store import Store


class _Forward:
    """A reporter inside a worker: sends every event to the driver."""

    def __init__(self, results, worker: int):
        self.results, self.worker = results, worker

    def pack_started(self, pack, index, total, fused):
        pass

    def step(self, done, total):
        pass

    def epoch(self, spec, record):
        self.results.put(("epoch", self.worker, spec.to_dict(), asdict(record)))

    def run_finished(self, spec, row, reused):
        pass


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive its driver (kill -9): the driver's claims lapse with it, and
    another sweep may then take up the runs this worker would still be training."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)


def _worker_main(worker: int, device_name: str, execution: Execution, tasks, results, parent: int) -> None:
    import torch

    from . import data as D
    from . import tuning
    from .devices import resolve_device

    _die_with_parent(parent)
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    runner = PackRunner(Store(execution.store), device, engine_options(execution), _Forward(results, worker))
    loaded: dict[tuple, tuple] = {}
    while True:
        task = tasks.get()
        if task is None:
            return
        index, spec_dicts, start_epoch = task
        specs = tuple(RunSpec.from_dict(d) for d in spec_dicts)
        try:
            key = data_key(specs[0])
            if key not in loaded:
                loaded.clear()
                cpu = D.load(specs[0], execution.data_dir)
                loaded[key] = (cpu, cpu.to(device))
            cpu, on_device = loaded[key]
            fused = tuning.choose_fuse(specs, device, runner.options)
            results.put(("started", worker, index, fused))
            rows = runner.run(Pack(specs, start_epoch), on_device, cpu)
            results.put(("done", worker, index, rows))
        except Exception:
            results.put(("error", worker, index, traceback.format_exc().strip().splitlines()[-1]))


def execute_workers(runs: list[RunSpec], execution: Execution, datasets: dict, devices: list[str],
                    reporter: Reporter | None = None) -> list[dict]:
    """Train (or reuse) every run on len(devices) worker processes; one row per run (None for runs
    another process holds, see `executor.until_done`), in order."""
    reporter = reporter or Silent()
    store, work, rows = begin(runs, execution, reporter)
    try:
        if work.todo:
            _train_packs(work, execution, devices, store, reporter, rows, datasets)
    finally:
        work.release_all()
    return [rows.get(s.run_id) for s in runs]


def _train_packs(work, execution: Execution, devices: list[str], store: Store, reporter: Reporter,
                 rows: dict, datasets: dict) -> None:
    packs: list[Pack] = plan_all(work.requested, execution.pack_size, work.epochs_done, _flops_of(datasets), work.todo)
    ctx = mp.get_context("spawn")
    by_spec = {s.run_id: s for s in work.todo}
    results, queues = ctx.Queue(), [ctx.Queue() for _ in devices]  # a queue per worker: who holds what

    def start(worker: int):  # a fresh worker process on the worker's device
        proc = ctx.Process(target=_worker_main, daemon=True,
                           args=(worker, devices[worker], execution, queues[worker], results, os.getpid()))
        proc.start()
        return proc

    procs = [start(w) for w in range(len(devices))]
    waiting = list(range(len(packs)))
    holding: dict[int, int] = {}  # worker -> pack index

    def hand_out(worker: int) -> None:
        if waiting:
            index = waiting.pop(0)
            holding[worker] = index
            pack = packs[index]
            queues[worker].put((index, [s.to_dict() for s in pack.runs], pack.start_epoch))

    for worker in range(len(devices)):
        hand_out(worker)
    try:
        while holding:
            try:
                message = results.get(timeout=0.5)
            except queue.Empty:
                for worker, proc in enumerate(procs):
                    if proc.is_alive() or worker not in holding:
                        continue
                    index = holding.pop(worker)
                    record_failed(packs[index].runs, store, reporter,
                                  f"worker process on {devices[worker]} died (exit code {proc.exitcode})", rows)
                    work.release(packs[index].runs)
                    procs[worker] = start(worker)
                    hand_out(worker)
                continue
            kind, worker = message[0], message[1]
            if kind == "epoch":
                reporter.epoch(by_spec[RunSpec.from_dict(message[2]).run_id], engine_record(message[3]))
            elif kind == "started":
                reporter.pack_started(packs[message[2]], message[2], len(packs), message[3])
            elif kind in ("done", "error"):
                index = message[2]
                holding.pop(worker, None)
                if kind == "error":
                    record_failed(packs[index].runs, store, reporter, message[3], rows)
                else:
                    for row in message[3]:
                        rows[row["run_id"]] = row
                        reporter.run_finished(by_spec[row["run_id"]], row, reused=False)
                work.release(packs[index].runs)
                hand_out(worker)
    finally:
        _shut_down(queues, procs)
    store.refresh()


def _flops_of(datasets: dict):
    def flops(spec: RunSpec) -> int:
        data = datasets[data_key(spec)]
        return flops_per_image(spec, data.input_shape, data.num_classes)

    return flops


def _shut_down(queues, procs) -> None:
    """Tell every worker to stop; terminate the ones still alive after 10 s."""
    for q in queues:
        q.put(None)
    deadline = time.time() + 10
    for proc in procs:
        proc.join(max(0.1, deadline - time.time()))
        if proc.is_alive():
            proc.terminate()


def engine_record(d: dict):
    from .engine import EpochRecord

    return EpochRecord(**d)
