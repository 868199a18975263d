"""Kill suite: SIGKILL a real sweep at random moments, re-run it to the end, check nothing was lost.

One trial: start the sweep (two-moons, 12 runs in packs of 3, a checkpoint every epoch) in a
subprocess, kill it with SIGKILL after a random delay (seeded), look at the store, repeat one to three
times, then run the same command to the end. Checks, per trial:

- after every kill, every file in the store is readable (no partial Parquet file or checkpoint);
- at the end, every planned run is present exactly once, no temporary file or claim is left, and
  `report` reads the store with no warning;
- runs that were finished at a kill were not trained again (their files are untouched);
- final status and test accuracy of every run equal those of an uninterrupted sweep, bit for bit,
  and so does every epoch row (losses and accuracies): a resumed pack holds the runs it started
  with, and a pack's checkpoints are saved all or nothing, so no run resumes beside other mates;
- no checkpoint's `.prev` (the state before a pack's save) is left.

    python -m benchmarks.kill_suite --trials 20 --seed 0

`tests/test_faults.py` runs three trials of it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustres.store import EPOCHS_SCHEMA, RUNS_SCHEMA, Store, read_run_file

# --fuse: every process runs the packs the same way, whatever the engine's rule for the device
# says (fused and in turn differ by float rounding, and the comparison is bit for bit).
SWEEP = ["sweep", "--dataset", "two-moons", "--depths", "3,6", "--h", "0.1,0.5,1", "--seeds", "2",
         "--epochs", "40", "--pack-size", "3", "--checkpoint-every", "0", "--fuse", "--json"]
PLANNED = 12


@dataclass
class Counts:
    trials: int = 0
    kills: int = 0
    kills_before_any_run: int = 0  # the store held no run row yet
    kills_mid_sweep: int = 0  # some rows written, not all runs finished
    kills_after_all_finished: int = 0  # only the final bookkeeping was left
    finished_at_kill: int = 0  # runs found finished when a kill landed (must not be retrained)
    resumed_mid_run: int = 0  # runs found part-way (a checkpoint, not finished) when a kill landed
    kills_mid_save: int = 0  # the kill cut a pack's save short (a checkpoint's .prev was left)
    failures: list[str] = field(default_factory=list)


def _command(store: Path) -> tuple[list[str], dict]:
    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "robustres", *SWEEP], env


EPOCH_FIELDS = ["train_loss", "train_acc", "test_loss", "test_acc"]


def epoch_rows(store: Store) -> dict:
    """run_id -> [(epoch, train_loss, train_acc, test_loss, test_acc), ...] in epoch order."""
    rows = store.epochs().sort_values(["run_id", "epoch"])
    return {run_id: [tuple(r) for r in group[["epoch", *EPOCH_FIELDS]].itertuples(index=False)]
            for run_id, group in rows.groupby("run_id")}


def reference(workdir: Path) -> tuple[dict, float]:
    """The uninterrupted sweep: run_id -> (status, final_test_acc), and how long it took."""
    args, env = _command(workdir / "whole")
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the uninterrupted sweep failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = json.loads(done.stdout)["runs"]
    return {r["run_id"]: (r["status"], r["final_test_acc"]) for r in rows}, seconds


def unreadable_files(root: Path) -> list[str]:
    """Every store file that cannot be read back, by the store's own readers."""
    bad = []
    for folder, schema in (("runs", RUNS_SCHEMA), ("epochs", EPOCHS_SCHEMA)):
        for path in (root / folder).glob("*.parquet"):
            try:
                read_run_file(path, schema)
            except Exception as exc:
                bad.append(f"{path.name}: {type(exc).__name__}")
    for path in (root / "checkpoints").glob("*.pt"):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            bad.append(f"{path.name}: {type(exc).__name__}")
    return bad


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def trial(workdir: Path, rng: random.Random, expected: dict, seconds: float, counts: Counts) -> None:
    store_dir = workdir / f"trial-{counts.trials}"
    store = Store(store_dir)
    args, env = _command(store_dir)
    counts.trials += 1
    untouched: dict[str, tuple] = {}  # run_id -> stamps of its files when it was seen finished
    for _ in range(rng.randint(1, 3)):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, seconds))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.kills += 1
        bad = unreadable_files(store_dir)
        if bad:
            counts.failures.append(f"trial {counts.trials}: unreadable after a kill: {bad}")
        counts.kills_mid_save += any(store.checkpoints_dir.glob("*.prev"))
        rows = store.runs(columns=["run_id", "status"]) if store.runs_dir.exists() else None
        finished = [] if rows is None else list(rows.run_id[rows.status.isin(["completed", "diverged"])])
        if rows is None or rows.empty:
            counts.kills_before_any_run += 1
        elif len(finished) < PLANNED:
            counts.kills_mid_sweep += 1
        else:
            counts.kills_after_all_finished += 1
        for run_id in finished:
            if run_id not in untouched:
                counts.finished_at_kill += 1
                untouched[run_id] = (_stamp(store.runs_dir / f"{run_id}.parquet"),
                                     _stamp(store.checkpoint_path(run_id)))
        if rows is not None:
            counts.resumed_mid_run += sum(
                1 for r in rows.run_id[rows.status == "running"] if store.checkpoint_path(r).exists())

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    problems = []
    if done.returncode != 0:
        problems.append(f"the final run exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    else:
        final = {r["run_id"]: (r["status"], r["final_test_acc"]) for r in json.loads(done.stdout)["runs"]}
        if final != expected:
            diff = [r for r in expected if final.get(r) != expected[r]]
            problems.append(f"{len(diff)} runs differ from the uninterrupted sweep")
        mine, theirs = epoch_rows(Store(store_dir)), epoch_rows(Store(workdir / "whole"))
        diff = [r for r in theirs if mine.get(r) != theirs[r]]
        if diff:
            problems.append(f"{len(diff)} runs' epoch rows differ from the uninterrupted sweep's")
    files = sorted(p.name for p in store.runs_dir.glob("*.parquet"))
    if files != sorted(f"{r}.parquet" for r in expected):
        problems.append(f"run files {len(files)}, planned {len(expected)}")
    check = Store(store_dir)
    runs = check.runs()
    if sorted(runs.run_id) != sorted(expected) or not runs.run_id.is_unique or check.warnings:
        problems.append(f"store rows {len(runs)} (unique: {runs.run_id.is_unique}), warnings {check.warnings}")
    leftovers = [str(p.relative_to(store_dir)) for p in store_dir.rglob("*.tmp")]
    leftovers += [str(p.relative_to(store_dir)) for p in (store_dir / "claims").glob("*.json")]
    leftovers += [str(p.relative_to(store_dir)) for p in store.checkpoints_dir.glob("*.prev")]
    if leftovers:
        problems.append(f"left behind: {leftovers}")
    retrained = [r for r, stamps in untouched.items()
                 if (_stamp(store.runs_dir / f"{r}.parquet"), _stamp(store.checkpoint_path(r))) != stamps]
    if retrained:
        problems.append(f"{len(retrained)} finished runs were written again")
    bad = unreadable_files(store_dir)
    if bad:
        problems.append(f"unreadable at the end: {bad}")
    counts.failures += [f"trial {counts.trials}: {p}" for p in problems]


def run_suite(trials: int, seed: int, workdir: Path) -> Counts:
    expected, seconds = reference(workdir)
    if len(expected) != PLANNED:
        raise SystemExit(f"the sweep planned {len(expected)} runs, expected {PLANNED}")
    rng = random.Random(seed)
    counts = Counts()
    for _ in range(trials):
        trial(workdir, rng, expected, seconds, counts)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="Keep the stores in this folder (default: a temporary one).")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="robustres-kill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        counts = run_suite(args.trials, args.seed, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("| trials | kills | before any run | mid-sweep | after all finished | finished at a kill, "
          "untouched | part-way at a kill, resumed | mid pack save | failures |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {counts.trials} | {counts.kills} | {counts.kills_before_any_run} | {counts.kills_mid_sweep} | "
          f"{counts.kills_after_all_finished} | {counts.finished_at_kill} | {counts.resumed_mid_run} | "
          f"{counts.kills_mid_save} | {len(counts.failures)} |")
    print(f"({time.perf_counter() - started:.0f} s)")
    for failure in counts.failures:
        print("FAIL", failure)
    sys.exit(1 if counts.failures else 0)


if __name__ == "__main__":
    main()
