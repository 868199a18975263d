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
    python -m benchmarks.kill_suite --search --trials 20 --seed 0

`--search` kills `robustres search` instead (two-moons, 2 depths, 6 values of h, 5 seeds): at
random moments, and, one launch in three, at the moment a random kill rarely hits, between a run's
last checkpoint and its final row (the executor's kill switch, ROBUSTRES_TEST_KILL). One trial in
three resumes with other options than it was killed with (another budget or margin). Checks: the
final answer (recommendations, decisions, model-epochs) equals that of an uninterrupted search with
the final options; no run is left `running`; nothing temporary is left; with unchanged options, every
epoch row equals the uninterrupted search's, bit for bit.

`tests/test_faults.py` runs three trials of each in CI.
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

from robustres.execution.runner import KILL_SWITCH
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
    def same(value):  # NaN (a diverged epoch's test loss) as None, so that equal rows compare equal
        return None if value != value else value

    return {run_id: [tuple(same(v) for v in r) for r in group[["epoch", *EPOCH_FIELDS]].itertuples(index=False)]
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


# ------------------------------------------------------------------ searches


SEARCH = ["search", "--dataset", "two-moons", "--depths", "6,12", "--h", "0.01,0.03,0.1,0.3,1,3", "--seeds", "5",
          "--epochs", "8", "--milestones", "", "--n-train", "300", "--n-test", "300", "--checkpoint-every", "0",
          "--fuse", "--json"]
# The options a search is killed or resumed with: the first is the usual one.
SEARCH_OPTIONS = (("--budget", "0.5"), ("--budget", "0.6"), ("--budget", "0.5", "--margin", "1"))


@dataclass
class SearchCounts:
    trials: int = 0
    kills: int = 0
    kills_at_final_checkpoint: int = 0  # the kill switch: a run left `running` at its last epoch
    left_at_the_end: int = 0  # runs found `running` at epochs_done == epochs after a kill
    resumed_with_other_options: int = 0
    failures: list[str] = field(default_factory=list)


def _search_command(store: Path, options: tuple, kill_switch: bool = False) -> tuple[list[str], dict]:
    env = dict(os.environ, ROBUSTRES_STORE=str(store), ROBUSTRES_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop(KILL_SWITCH, None)
    if kill_switch:
        env[KILL_SWITCH] = "final-checkpoint"
    return [sys.executable, "-m", "robustres", *SEARCH, *options], env


def the_answer(out: str) -> dict:
    """What must not change across kills: everything but the warnings (a resume with other options
    rightly warns that runs went past the rungs where this search stopped them)."""
    result = json.loads(out)
    return {k: v for k, v in result.items() if k != "warnings"}


def search_reference(workdir: Path, options: tuple, cache: dict) -> tuple[dict, float, Path]:
    if options not in cache:
        store = workdir / f"whole-search-{len(cache)}"
        args, env = _search_command(store, options)
        started = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"the uninterrupted search failed: {done.stderr.strip().splitlines()[-1:]}")
        cache[options] = (the_answer(done.stdout), time.perf_counter() - started, store)
    return cache[options]


def search_trial(workdir: Path, rng: random.Random, cache: dict, counts: SearchCounts) -> None:
    store_dir = workdir / f"search-trial-{counts.trials}"
    counts.trials += 1
    first = SEARCH_OPTIONS[0]
    final = rng.choice(SEARCH_OPTIONS[1:]) if rng.random() < 1 / 3 else first
    counts.resumed_with_other_options += final != first
    for kill in range(rng.randint(1, 3)):
        switch = rng.random() < 1 / 3
        args, env = _search_command(store_dir, first, kill_switch=switch)
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if switch:
            proc.wait(timeout=600)  # it kills itself at the moment, or finishes when no run is left to end
        else:
            time.sleep(rng.uniform(0.0, search_reference(workdir, first, cache)[1]))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed = proc.returncode == -signal.SIGKILL  # a switched launch with nothing left to end just finishes
        counts.kills += killed
        counts.kills_at_final_checkpoint += switch and killed
        if store_dir.exists() and (store_dir / "runs").exists():
            rows = Store(store_dir).runs(columns=["status", "epochs_done", "epochs"])
            counts.left_at_the_end += int(((rows.status == "running") & (rows.epochs_done == rows.epochs)).sum())
    expected, _, whole = search_reference(workdir, final, cache)
    args, env = _search_command(store_dir, final)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    problems = []
    if done.returncode != 0:
        problems.append(f"the final run exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    elif the_answer(done.stdout) != expected:
        problems.append(f"the answer differs from the uninterrupted search's (options {' '.join(final)})")
    rows = Store(store_dir).runs(columns=["run_id", "status", "epochs_done", "epochs"])
    stuck = int(((rows.status == "running") & (rows.epochs_done == rows.epochs)).sum())
    if stuck:
        problems.append(f"{stuck} runs left running at their last epoch")
    leftovers = [str(p.relative_to(store_dir)) for p in store_dir.rglob("*.tmp")]
    leftovers += [str(p.relative_to(store_dir)) for p in (store_dir / "claims").glob("*.json")]
    if leftovers:
        problems.append(f"left behind: {leftovers}")
    if final == first:
        mine, theirs = epoch_rows(Store(store_dir)), epoch_rows(Store(whole))
        if mine != theirs:
            problems.append(f"{sum(mine.get(r) != theirs[r] for r in theirs)} runs' epoch rows differ")
    counts.failures += [f"search trial {counts.trials}: {p}" for p in problems]


def run_search_suite(trials: int, seed: int, workdir: Path) -> SearchCounts:
    rng, cache, counts = random.Random(seed), {}, SearchCounts()
    for _ in range(trials):
        search_trial(workdir, rng, cache, counts)
    return counts


def run_suite(trials: int, seed: int, workdir: Path) -> Counts:
    expected, seconds = reference(workdir)
    if len(expected) != PLANNED:
        raise SystemExit(f"the sweep planned {len(expected)} runs, expected {PLANNED}")
    rng = random.Random(seed)
    counts = Counts()
    for _ in range(trials):
        trial(workdir, rng, expected, seconds, counts)
    return counts


# The table each suite prints: (header, the Counts fields of its row, failures last).
SWEEP_TABLE = (["trials", "kills", "before any run", "mid-sweep", "after all finished", "finished at a kill, untouched",
                "part-way at a kill, resumed", "mid pack save"],
               ["trials", "kills", "kills_before_any_run", "kills_mid_sweep", "kills_after_all_finished",
                "finished_at_kill", "resumed_mid_run", "kills_mid_save"])
SEARCH_TABLE = (["trials", "kills", "at a run's final checkpoint", "runs left running at their last epoch",
                 "resumed with other options"],
                ["trials", "kills", "kills_at_final_checkpoint", "left_at_the_end", "resumed_with_other_options"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="Keep the stores in this folder (default: a temporary one).")
    parser.add_argument("--search", action="store_true", help="Kill searches instead of sweeps.")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="robustres-kill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    suite, (header, fields) = (run_search_suite, SEARCH_TABLE) if args.search else (run_suite, SWEEP_TABLE)
    started = time.perf_counter()
    try:
        counts = suite(args.trials, args.seed, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("| " + " | ".join([*header, "failures"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    print("| " + " | ".join([*(str(getattr(counts, f)) for f in fields), str(len(counts.failures))]) + " |")
    print(f"({time.perf_counter() - started:.0f} s)")
    for failure in counts.failures:
        print("FAIL", failure)
    sys.exit(1 if counts.failures else 0)


if __name__ == "__main__":
    main()
