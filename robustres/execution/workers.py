"""Local worker processes: one per device (every visible GPU), packs queued to whichever is free.

Each worker is a spawned process pinned to its device; it loads the data it needs once, trains
the packs it is handed through the same `PackRunner` as the in-process executor (so it writes its
own runs' rows and checkpoints, one file per run) and sends its progress and rows back to the
driver. The driver watches the workers: when one dies (a segfault, the OOM killer, kill -9), its
own PackRunner marks the pack it held `failed` with the exit code, a fresh worker takes its
device, and the sweep goes on. A worker uses --threads CPU threads when given, else 1.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import asdict

import torch

from ..spec import Execution, RunSpec
from ..store import Store
from .plan import Pack, data_key, flops_in, plan_all
from .runner import PackRunner, Reporter, engine_options, failure
from .session import Session


class _Forward:
    """A reporter inside a worker: sends what the driver reports to it (its rows come with "done")."""

    def __init__(self, results, worker: int):
        self.results, self.worker = results, worker

    def pack_started(self, pack, index, total, fused):  # noqa: ARG002 (the driver has the pack and the total)
        self.results.put(("started", self.worker, index, fused))

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
    from .. import data as D
    from ..devices import resolve_device

    _die_with_parent(parent)
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(execution.threads or 1)
    runner = PackRunner(Store(execution.store), device, engine_options(execution), _Forward(results, worker))
    loaded: dict[tuple, tuple] = {}
    while True:
        task = tasks.get()
        if task is None:
            return
        index, total, spec_dicts, start_epoch = task
        pack = Pack(tuple(RunSpec.from_dict(d) for d in spec_dicts), start_epoch)
        try:
            key = data_key(pack.runs[0])
            if key not in loaded:
                loaded.clear()
                cpu = D.load(pack.runs[0], execution.data_dir)
                loaded[key] = (cpu, cpu.to(device))
            cpu, on_device = loaded[key]
            runner.announce(pack, index, total)
            results.put(("done", worker, index, runner.run(pack, on_device, cpu)))
        except Exception as exc:
            results.put(("error", worker, index, failure(exc)))


class _Pool:
    """The driver's side: a worker process per device, the pack each one holds, the packs waiting."""

    def __init__(self, execution: Execution, devices: list[str], packs: list[Pack]):
        self.execution, self.devices, self.packs = execution, devices, packs
        self.ctx = mp.get_context("spawn")
        self.results, self.queues = self.ctx.Queue(), [self.ctx.Queue() for _ in devices]  # a queue per worker
        self.procs = [self.start(w) for w in range(len(devices))]
        self.waiting = list(range(len(packs)))
        self.holding: dict[int, int] = {}  # worker -> pack index

    def start(self, worker: int):
        """A fresh worker process on the worker's device."""
        proc = self.ctx.Process(target=_worker_main, daemon=True,
                                args=(worker, self.devices[worker], self.execution, self.queues[worker],
                                      self.results, os.getpid()))
        proc.start()
        return proc

    def hand_out(self, worker: int) -> None:
        if self.waiting:
            index = self.waiting.pop(0)
            self.holding[worker] = index
            pack = self.packs[index]
            self.queues[worker].put((index, len(self.packs), [s.to_dict() for s in pack.runs], pack.start_epoch))

    def dead(self) -> list[tuple[int, int, int | None]]:
        """(worker, pack index, exit code) of every worker that died holding a pack; each is replaced."""
        out = []
        for worker, proc in enumerate(self.procs):
            if not proc.is_alive() and worker in self.holding:
                out.append((worker, self.holding.pop(worker), proc.exitcode))
                self.procs[worker] = self.start(worker)
        return out

    def shut_down(self) -> None:
        """Tell every worker to stop; terminate the ones still alive after 10 s."""
        for q in self.queues:
            q.put(None)
        deadline = time.time() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.time()))
            if proc.is_alive():
                proc.terminate()


def train_on_workers(session: Session, execution: Execution, datasets: dict, reporter: Reporter,
                     devices: list[str]) -> None:
    """Train the session's runs on len(devices) worker processes, packs to whichever is free."""
    from ..engine import EpochRecord

    packs = plan_all(session.requested, execution.pack_size, session.epochs_done, flops_in(datasets), session.todo)
    runner = PackRunner(session.store, torch.device(devices[0]), engine_options(execution), reporter)
    by_id = {spec.run_id: spec for spec in session.todo}
    pool = _Pool(execution, devices, packs)
    try:
        for worker in range(len(devices)):
            pool.hand_out(worker)
        while pool.holding:
            try:
                kind, worker, *message = pool.results.get(timeout=0.5)
            except queue.Empty:
                for worker, index, code in pool.dead():
                    session.done(packs[index], runner.fail(packs[index], f"worker process on {devices[worker]} "
                                                                         f"died (exit code {code})"))
                    pool.hand_out(worker)
                continue
            if kind == "epoch":
                reporter.epoch(by_id[RunSpec.from_dict(message[0]).run_id], EpochRecord(**message[1]))
            elif kind == "started":
                reporter.pack_started(packs[message[0]], message[0], len(packs), message[1])
            else:
                index = message[0]
                pool.holding.pop(worker, None)
                rows = runner.fail(packs[index], message[1]) if kind == "error" else message[1]
                for row in rows if kind == "done" else []:
                    reporter.run_finished(by_id[row["run_id"]], row, reused=False)
                session.done(packs[index], rows)
                pool.hand_out(worker)
    finally:
        pool.shut_down()
