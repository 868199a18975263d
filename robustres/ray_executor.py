"""The Ray executor: every pack is a Ray task; the driver is the only writer to the store.

A task gets its pack's RunSpecs, the data folder and the checkpoints the store already holds for
them, trains the pack on its worker's device (a GPU when the task was given one) and returns each
run's outcome and final checkpoint. The driver writes rows, epochs and checkpoints as tasks finish,
so the store never depends on a worker's disk. Works with a local Ray started on the spot and with
a cluster (`ray start --head`, then `--ray-address HOST:PORT`); on a cluster every node needs this
package installed and the data at the same path.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import engine
from .checkpoints import load_checkpoint, resolved_path, save_pack
from .executor import Reporter, Silent, begin, flops_per_image, record_failed, result_row
from .plan import Pack, data_key, plan_all
from .spec import Execution, RunSpec
from .store import now_iso
from .units import Options


def train_pack_task(spec_dicts: list[dict], data_dir: str, options: dict, saved: list[bytes | None],
                    threads: int) -> list[dict]:
    """Runs inside a Ray worker: train one pack, return per-run outcomes and final checkpoints."""
    import torch

    from . import data as D

    torch.set_num_threads(max(1, threads))
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = D.load(specs[0], Path(data_dir)).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{s.run_id}.pt" for s in specs]
        for path, blob in zip(paths, saved):
            if blob is not None:
                path.write_bytes(blob)
        outcomes = engine.train(specs, data, device, paths, options=Options(**options))
        return [{"status": o.status, "history": [asdict(r) for r in o.history],
                 "diverged_epoch": o.diverged_epoch, "diverged_step": o.diverged_step, "seconds": o.seconds,
                 "layer_stats": o.layer_stats, "fused": o.fused,
                 "checkpoint": path.read_bytes() if path.exists() else None, "device": str(device)}
                for o, path in zip(outcomes, paths)]


def execute_ray(runs: list[RunSpec], execution: Execution, datasets: dict, reporter: Reporter | None = None,
                address: str | None = None) -> list[dict]:
    """Train (or reuse) every run through Ray; one store row per run (None for runs another process
    holds, see `executor.until_done`), in the order given."""
    reporter = reporter or Silent()
    store, work, rows = begin(runs, execution, reporter)
    try:
        if work.todo:
            _train_packs(work, execution, datasets, store, reporter, rows, address)
    finally:
        work.release_all()
    return [rows.get(s.run_id) for s in runs]


def _train_packs(work, execution: Execution, datasets: dict, store, reporter: Reporter, rows: dict,
                 address: str | None) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {"ROBUSTRES_OFFLINE": os.environ.get("ROBUSTRES_OFFLINE", "")}})
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per_task_cpus = 1 if gpus else max(1, cpus // 2)
        task = ray.remote(train_pack_task).options(num_gpus=1 if gpus else 0, num_cpus=per_task_cpus,
                                                   max_retries=0)

        def flops(spec: RunSpec) -> int:
            data = datasets[data_key(spec)]
            return flops_per_image(spec, data.input_shape, data.num_classes)

        packs: list[Pack] = plan_all(work.requested, execution.pack_size, work.epochs_done, flops, work.todo)
        pending, bases = {}, {}
        for index, pack in enumerate(packs):
            saved = _mark_running(pack, datasets[data_key(pack.runs[0])], store, work, bases)
            future = task.remote([s.to_dict() for s in pack.runs], str(execution.data_dir), _options(execution),
                                 saved, per_task_cpus)
            pending[future] = pack
            reporter.pack_started(pack, index, len(packs), True)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pack = pending.pop(done[0])
            _collect(ray, done[0], pack, store, reporter, rows, bases)
            work.release(pack.runs)
    finally:
        if started_here:
            ray.shutdown()
    store.refresh()


def _options(execution: Execution) -> dict:
    return {"fuse": execution.fuse, "compile": execution.compile, "checkpoint_seconds": execution.checkpoint_every,
            "track_layers": execution.track_layers, "track_every": execution.track_every, "stop_at": execution.stop_at}


def _mark_running(pack: Pack, data, store, work, bases: dict) -> list[bytes | None]:
    """Store the pack's runs as `running`; returns the checkpoints the store holds for them."""
    import torch

    from . import __version__

    saved = []
    for spec in pack.runs:
        existing = store.get_run(spec.run_id)
        bases[spec.run_id] = {**engine.describe(spec, data.input_shape, data.num_classes),
                              "torch_version": torch.__version__, "robustres_version": __version__,
                              "created_at": existing["created_at"] if existing else now_iso()}
        path = store.checkpoint_path(spec.run_id)
        saved.append(resolved_path(path).read_bytes() if load_checkpoint(path, spec.run_id) else None)
        store.put_run({**result_row(spec, None, bases[spec.run_id]), "status": "running",
                       "device": "ray", "epochs_done": work.epochs_done.get(spec.run_id, 0)})
    return saved


def _collect(ray, future, pack: Pack, store, reporter: Reporter, rows: dict, bases: dict) -> None:
    """A finished task's results into the store (the driver is the only writer)."""
    started = time.perf_counter()
    try:
        results = ray.get(future)
    except Exception as exc:  # the task raised, or its worker died
        detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        for spec in pack.runs:
            record_failed([spec], store, reporter, detail, rows,
                          base={**bases[spec.run_id], "device": "ray", "epochs_done": 0},
                          seconds=time.perf_counter() - started)
        return
    save_pack([(store.checkpoint_path(spec.run_id), result["checkpoint"])
               for spec, result in zip(pack.runs, results) if result["checkpoint"] is not None])
    for spec, result in zip(pack.runs, results):
        outcome = engine.Outcome(status=result["status"], history=[engine.EpochRecord(**r) for r in result["history"]],
                                 diverged_epoch=result["diverged_epoch"], diverged_step=result["diverged_step"],
                                 seconds=result["seconds"], fused=result["fused"], epochs=spec.epochs)
        row = {**result_row(spec, outcome, bases[spec.run_id]), "device": f"ray:{result['device']}"}
        store.put_epochs(spec.run_id, result["history"])
        if result["layer_stats"]:
            store.put_layer_stats(spec.run_id, result["layer_stats"])
        store.put_run(row)
        reporter.run_finished(spec, row, reused=False)
        rows[spec.run_id] = store.get_run(spec.run_id) or row
