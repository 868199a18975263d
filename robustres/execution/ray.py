"""The Ray driver: every pack is a Ray task; the driver is the only writer to the store.

A task gets its pack's RunSpecs, the Execution and the checkpoints the store holds for them, trains
the pack on its worker's device (a GPU when the task was given one) with the engine options every
driver uses, and returns the outcomes (or its error), the checkpoints it saved, its device and its
thread count. The driver's PackRunner stores them (`start` before the task, `finish` or `fail`
after it), so a Ray row is built like any other and the store never depends on a worker's disk. A
task that fails returns the checkpoints it had saved: its runs keep their epochs, as they do here.

Works with a local Ray started on the spot and with a cluster (`ray start --head`, then
`--ray-address HOST:PORT`); on a cluster every node needs this package installed and the data at
the same path. The driver's ROBUSTRES_* variables reach the tasks (runtime_env). A task uses
--threads CPU threads when given, else the CPUs it was given.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from .. import engine
from ..checkpoints import load_checkpoint, resolved_path, save_pack, settle
from ..spec import Execution, RunSpec
from .plan import Pack, data_key, flops_in, plan_all
from .runner import PackRunner, Reporter, Where, engine_options, failure, where_here
from .session import Session


def train_pack_task(spec_dicts: list[dict], execution: Execution, saved: list[bytes | None], threads: int) -> dict:
    """Runs inside a Ray worker: train one pack; never raises (its error comes back as a result)."""
    from .. import data as D

    torch.set_num_threads(max(1, threads))
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where, started = where_here(device), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{s.run_id}.pt" for s in specs]
        for path, blob in zip(paths, saved):
            if blob is not None:
                path.write_bytes(blob)
        try:
            data = D.load(specs[0], execution.data_dir).to(device)
            outcomes = engine.train(specs, data, device, paths, options=engine_options(execution))
            error = None
        except Exception as exc:  # the driver fails the pack, keeping the checkpoints saved so far
            outcomes, error = None, failure(exc)
        settle(paths)
        return {"outcomes": outcomes, "error": error, "device": where.device, "threads": where.threads,
                "seconds": time.perf_counter() - started,
                "checkpoints": [path.read_bytes() if path.exists() else None for path in paths]}


def train_on_ray(session: Session, execution: Execution, datasets: dict, reporter: Reporter) -> None:
    """Train the session's runs as Ray tasks (a local Ray is started, and shut down, if none is)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        forwarded = {k: v for k, v in os.environ.items() if k.startswith("ROBUSTRES_")}
        ray.init(address=execution.ray_address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, runtime_env={"env_vars": {"ROBUSTRES_OFFLINE": "", **forwarded}})
    try:
        _run_tasks(ray, session, execution, datasets, reporter)
    finally:
        if started_here:
            ray.shutdown()


def _run_tasks(ray, session: Session, execution: Execution, datasets: dict, reporter: Reporter) -> None:
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = 1 if gpus else max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)  # per task
    task = ray.remote(train_pack_task).options(num_gpus=1 if gpus else 0, num_cpus=cpus, max_retries=0)
    runner = PackRunner(session.store, torch.device("cuda" if gpus else "cpu"), engine_options(execution), reporter)
    packs = plan_all(session.requested, execution.pack_size, session.epochs_done, flops_in(datasets), session.todo)
    pending = {}
    for index, pack in enumerate(packs):
        data = datasets[data_key(pack.runs[0])]
        runner.start(pack, data.input_shape, data.num_classes, Where("ray", None))
        future = task.remote([s.to_dict() for s in pack.runs], execution, _stored_checkpoints(session, pack),
                             execution.threads or cpus)
        pending[future] = pack
        runner.announce(pack, index, len(packs))
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        pack = pending.pop(done[0])
        session.done(pack, _collect(ray, done[0], pack, runner))


def _stored_checkpoints(session: Session, pack: Pack) -> list[bytes | None]:
    """The checkpoint file each run of the pack resumes from, as bytes (None: it starts afresh)."""
    paths = [session.store.checkpoint_path(spec.run_id) for spec in pack.runs]
    return [resolved_path(path).read_bytes() if load_checkpoint(path, spec.run_id) else None
            for spec, path in zip(pack.runs, paths)]


def _collect(ray, future, pack: Pack, runner: PackRunner) -> list[dict]:
    """A finished task's results into the store through the runner; returns the rows."""
    started = time.perf_counter()
    try:
        result = ray.get(future)
    except Exception as exc:  # its worker died: what the store holds is all there is
        lines = str(exc).strip().splitlines()
        return runner.fail(pack, f"{type(exc).__name__}: {lines[-1] if lines else ''}",
                           seconds=time.perf_counter() - started)
    save_pack([(runner.store.checkpoint_path(spec.run_id), blob)
               for spec, blob in zip(pack.runs, result["checkpoints"]) if blob is not None])
    where = Where(f"ray:{result['device']}", result["threads"])
    if result["error"] is not None:
        return runner.fail(pack, result["error"], where, seconds=result["seconds"])
    return runner.finish(pack, result["outcomes"], where)
