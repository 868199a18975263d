"""`robustres report` on a store of 10,000 runs and 800,000 epoch rows.

Builds the store the way sweeps leave it (one runs file and one epochs file per run, then the
read snapshot a sweep refreshes when it ends), then times the whole command in a fresh process
(interpreter start and imports included) three times, and once more with no snapshot (cold).

    .venv/bin/python -m benchmarks.report_scale [--store /tmp/rr-scale]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from robustres.spec import make_run_spec
from robustres.store import EPOCHS_SCHEMA, RUNS_SCHEMA, Store, config_columns

DEPTHS = (20, 32, 44, 56, 110)
HS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) + (0.3, 0.4, 0.6, 0.7, 0.8, 0.9)
SEEDS = range(100)  # 5 x 20 x 100 = 10,000 runs
EPOCHS = 80


def build(root: Path) -> None:
    (root / "runs").mkdir(parents=True)
    (root / "epochs").mkdir()
    for depth in DEPTHS:
        for h in HS:
            for seed in SEEDS:
                spec = make_run_spec(dataset="cifar10", depth=depth, h=h, seed=seed)
                acc = 0.9 - 0.02 * abs(__import__("math").log10(h / 0.1)) + 0.0001 * (seed % 7)
                row = {k: None for k in RUNS_SCHEMA.names}
                row.update(run_id=spec.run_id, **config_columns(spec), status="completed", final_test_acc=acc,
                           best_test_acc=acc + 0.005, epochs_done=EPOCHS, schema_version=1)
                table = pa.Table.from_pylist([row], schema=RUNS_SCHEMA)
                pq.write_table(table, root / "runs" / f"{spec.run_id}.parquet")
                epochs = pa.table({"run_id": [spec.run_id] * EPOCHS, "epoch": list(range(1, EPOCHS + 1)),
                                   "train_loss": [1.0] * EPOCHS, "train_acc": [0.5] * EPOCHS,
                                   "test_loss": [1.0] * EPOCHS, "test_acc": [acc] * EPOCHS,
                                   "lr": [0.1] * EPOCHS, "seconds": [1.0] * EPOCHS}, schema=EPOCHS_SCHEMA)
                pq.write_table(epochs, root / "epochs" / f"{spec.run_id}.parquet")


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", type=Path, default=Path("/tmp/rr-scale"))
    args = p.parse_args()
    root = args.store
    if not (root / "runs").is_dir():
        started = time.perf_counter()
        build(root)
        built = len(DEPTHS) * len(HS) * len(SEEDS)
        print(f"built {built:,} runs x {EPOCHS} epochs in {time.perf_counter() - started:.0f} s")
    store = Store(root)
    shutil.rmtree(root / ".snapshot", ignore_errors=True)
    started = time.perf_counter()
    store.refresh()  # what a sweep does when it ends
    refresh = time.perf_counter() - started
    runs, epochs = len(store.runs(columns=["run_id"])), len(store.epochs())
    cmd = [sys.executable, "-m", "robustres", "report", "--store", str(root), "--format", "json"]
    warm = [timed(cmd) for _ in range(3)]
    table = timed([sys.executable, "-m", "robustres", "report", "--store", str(root)])
    shutil.rmtree(root / ".snapshot")
    cold = timed(cmd)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"store: {runs:,} runs, {epochs:,} epoch rows")
    print(f"snapshot refresh (end of a sweep): {refresh:.1f} s")
    print(f"report --format json, whole command, 3 runs: {', '.join(f'{t:.2f} s' for t in warm)}")
    print(f"report (rich tables): {table:.2f} s")
    print(f"report with no snapshot (cold, builds it): {cold:.1f} s")


if __name__ == "__main__":
    main()
