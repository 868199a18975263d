"""The `robustres` command line: thin Typer commands over spec -> executor -> store.

Bad input exits with code 2 and one line on stderr ("error: ..."), before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

try:  # typer >= 0.29 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions

from . import __version__
from .spec import (EXECUTION_KEYS, DataError, Execution, SpecError, check_device, load_sweep_file, make_run_spec,
                   make_sweep_spec, parse_floats, parse_h_grid, parse_ints, parse_track_layers)
from .store import StoreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Step-factor (h) studies of ResNets, after Zhang et al., IJCAI 2019: y = x + h * F(x).",
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
INTERRUPTED = "interrupted: finished epochs are checkpointed; re-run the same command to resume"


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def _label(spec) -> str:
    return f"{spec.dataset} depth {spec.depth} h {spec.h:g} seed {spec.seed}"


def _members(pack) -> str:
    hs = ",".join(dict.fromkeys(f"{s.h:g}" for s in pack.runs))
    seeds = ",".join(dict.fromkeys(str(s.seed) for s in pack.runs))
    first = pack.runs[0]
    return f"{first.dataset} depth {first.depth} h {hs} seed {seeds}"


class PlainReporter:
    """Timestamped lines, for logs and CI (stdout is not a terminal).

    A pack of one gets a line per (thinned) epoch; a bigger pack one line per epoch for all its
    runs, with the range of their losses and accuracies.
    """

    def __init__(self, stream, total_runs: int = 0):
        self.stream = stream
        self.total, self.done = total_runs, 0
        self.pack_label, self.buffer = "", []

    def _say(self, text: str) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}", file=self.stream, flush=True)

    def pack_started(self, pack, index, total, fused):
        self._flush()
        how = "fused" if fused or pack.k == 1 else "in turn"
        more = f", resuming after epoch {pack.start_epoch}" if pack.start_epoch else ""
        self.pack_label = f"pack {index + 1}/{total}"
        self._say(f"{self.pack_label}: {pack.k} run(s) ({how}), {_members(pack)}, "
                  f"{pack.runs[0].epochs} epochs{more}")

    def step(self, done, total):
        pass

    def epoch(self, spec, r):
        if self.buffer and self.buffer[0][1].epoch != r.epoch:
            self._flush()
        self.buffer.append((spec, r))

    def _flush(self) -> None:
        if not self.buffer:
            return
        spec, r = self.buffer[0]
        records = [rec for _, rec in self.buffer]
        self.buffer = []
        # About ten lines per pack: the first epoch, every tenth of the run, and the last.
        every = max(1, spec.epochs // 10)
        if r.epoch != 1 and r.epoch % every and r.epoch != spec.epochs:
            return
        if len(records) == 1:
            self._say(f"{spec.run_id[:8]} {_label(spec)}: epoch {r.epoch}/{spec.epochs} loss {r.train_loss:.4f} "
                      f"train {100 * r.train_acc:.1f}% test {100 * r.test_acc:.1f}% ({r.seconds:.1f}s)")
            return
        losses = [x.train_loss for x in records]
        accs = [100 * x.test_acc for x in records]
        self._say(f"{self.pack_label} epoch {r.epoch}/{spec.epochs}: {len(records)} runs, loss "
                  f"{min(losses):.3f}-{max(losses):.3f}, test {min(accs):.1f}-{max(accs):.1f}%")

    def run_finished(self, spec, row, reused):
        self._flush()
        self.done += 1
        count = f"[{self.done}/{self.total}] " if self.total > 1 else ""
        if reused:
            self._say(f"{count}{spec.run_id[:8]} {_label(spec)}: {row['status']} in the store, not retrained (--force retrains)")
        else:
            self._say(f"{count}{spec.run_id[:8]} {_label(spec)}: {_status_text(row)}")


class RichReporter:
    """A live progress bar per pack: epochs done, with the range of its runs' test accuracy."""

    def __init__(self, console: Console, total_runs: int = 0):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.task = None
        self.last: dict[str, float] = {}
        self.counts = {"diverged": 0, "failed": 0}
        self.overall = (self.progress.add_task("all runs", total=total_runs, stats="")
                        if total_runs > 1 else None)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def pack_started(self, pack, index, total, fused):
        if self.task is not None:
            self.progress.stop_task(self.task)
        how = "fused" if fused or pack.k == 1 else "in turn"
        desc = f"[{index + 1}/{total}] {pack.k} run(s), {how}: {_members(pack)}"
        self.task = self.progress.add_task(desc, total=pack.runs[0].epochs, completed=pack.start_epoch, stats="")
        self.last = {}

    def step(self, done, total):
        # Progress inside long epochs, as a fraction of an epoch.
        if self.task is not None and total > 20 and done % max(1, total // 20) == 0:
            task = self.progress.tasks[-1]
            self.progress.update(self.task, completed=int(task.completed) + done / total)

    def epoch(self, spec, r):
        self.last[spec.run_id] = r.test_acc
        low, high = min(self.last.values()), max(self.last.values())
        stats = f"test {100 * low:.1f}%" if low == high else f"test {100 * low:.1f}-{100 * high:.1f}%"
        self.progress.update(self.task, completed=r.epoch, stats=stats)

    def run_finished(self, spec, row, reused):
        if row["status"] in self.counts:
            self.counts[row["status"]] += 1
        if self.overall is not None:
            self.progress.update(self.overall, advance=1, stats=f"{self.counts['diverged']} diverged, "
                                                               f"{self.counts['failed']} failed")
        if reused:
            if self.overall is None:
                self.progress.console.print(f"{_label(spec)}: {row['status']} in the store, not retrained")
        elif row["status"] != "completed":
            self.progress.console.print(f"{spec.run_id[:8]} {_label(spec)}: {_status_text(row)}")


def _status_text(row: dict) -> str:
    status = row["status"]
    if status == "completed":
        return f"completed: test {100 * row['final_test_acc']:.2f}% (best {100 * row['best_test_acc']:.2f}%)"
    if status == "diverged":
        return f"diverged at epoch {row['diverged_epoch']} step {row['diverged_step']}"
    return f"{status}: {row.get('error') or ''}"


def _pct(value) -> str:
    try:
        return "-" if value is None or value != value else f"{100 * value:.2f}"
    except TypeError:
        return "-"


# ---------------------------------------------------------------------------------------------
# Options shared by train and sweep (sweep's defaults are None: a flag given overrides the config)
# ---------------------------------------------------------------------------------------------

Dataset = Annotated[Optional[str], typer.Option(help="two-moons, cifar10, imagefolder, ag-news or synthetic.")]
DataDir = Annotated[Optional[Path], typer.Option(help="Data folder (default: $ROBUSTRES_DATA, else ~/.cache/robustres).")]
Epochs = Annotated[Optional[int], typer.Option(help="Epochs (default: the paper's protocol for the dataset).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Batch size (default: per dataset).")]
Lr = Annotated[Optional[float], typer.Option(help="Initial learning rate (default: 0.1).")]
Momentum = Annotated[Optional[float], typer.Option(help="SGD momentum (0.9).")]
Milestones = Annotated[Optional[str], typer.Option(help="Epochs after which lr is multiplied by gamma, e.g. 40,60; 'none' for a fixed lr.")]
Gamma = Annotated[Optional[float], typer.Option(help="Learning-rate factor at each milestone (0.1).")]
WeightDecay = Annotated[Optional[float], typer.Option(help="Weight decay (the paper uses none) (0).")]
Optimizer = Annotated[Optional[str], typer.Option(help="sgd or adam (sgd).")]
Bn = Annotated[Optional[bool], typer.Option("--bn/--no-bn", help="BatchNorm in every block (default: on, off for two-moons).")]
NoiseKind = Annotated[Optional[str], typer.Option(help="gaussian (images, points) or char-swap (text).")]
LimitTrain = Annotated[Optional[int], typer.Option(help="Train on a fixed, class-balanced subset of N examples.")]
LimitTest = Annotated[Optional[int], typer.Option(help="Test on a fixed, class-balanced subset of N examples.")]
NTrain = Annotated[Optional[int], typer.Option(help="Generated datasets: training examples (two-moons 1000).")]
NTest = Annotated[Optional[int], typer.Option(help="Generated datasets: test examples (two-moons 1000).")]
MoonsNoise = Annotated[Optional[float], typer.Option(help="Two-moons: std of the points' noise (0.2).")]
Like = Annotated[Optional[str], typer.Option(help="Synthetic data: the dataset whose shape it imitates (cifar10).")]
Width = Annotated[Optional[int], typer.Option(help="MLP ResNet: feature width (2).")]
Hidden = Annotated[Optional[int], typer.Option(help="MLP ResNet: hidden width inside a block (16).")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (auto).")]
Precision = Annotated[Optional[str], typer.Option(help="fp32, or bf16 autocast (auto: bf16 on CUDA, fp32 on the CPU).")]
PackSize = Annotated[Optional[str], typer.Option(help="Most runs trained together as one network (auto: as many as fit).")]
Fuse = Annotated[Optional[bool], typer.Option("--fuse/--no-fuse", help="Fused network or models in turn (default: measured).")]
Compile = Annotated[Optional[bool], typer.Option("--compile", help="torch.compile the network.")]
CheckpointEvery = Annotated[Optional[float], typer.Option(help="Checkpoint at an epoch's end once this many seconds passed since the last (0: every epoch); always after the last epoch (10).")]
TrackLayers = Annotated[Optional[str], typer.Option(help="Record weight and gradient norms of these weight layers (1-based, or 'last'), e.g. 2,50,last.")]
TrackEvery = Annotated[Optional[int], typer.Option(help="With --track-layers: every step of the first epoch, then every N steps (10).")]
Store_ = Annotated[Optional[Path], typer.Option("--store", help="Store folder (default: $ROBUSTRES_STORE, else ./robustres-store).")]
Force = Annotated[bool, typer.Option("--force", help="Retrain runs that the store already holds.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress goes to stderr).")]


def _execution(device, precision, pack_size, fuse, compile_, checkpoint_every, store, data_dir, force,
               track_layers=None, track_every=None):
    """The Execution and the resolved precision; validates before anything is touched."""
    kwargs = {"device": check_device(device or "auto")}
    torch_device_type = _device_type(kwargs["device"])
    precision = precision or "auto"
    if precision == "auto":
        precision = "bf16" if torch_device_type == "cuda" else "fp32"
    if pack_size not in (None, "auto"):
        sizes = parse_ints("--pack-size", pack_size)
        if len(sizes) != 1 or sizes[0] < 1:
            raise SpecError(f"--pack-size must be auto or a whole number >= 1, got {pack_size!r}")
        kwargs["pack_size"] = sizes[0]
    checkpoint_every = 10.0 if checkpoint_every is None else checkpoint_every
    if not checkpoint_every >= 0:
        raise SpecError(f"--checkpoint-every must be >= 0 seconds, got {checkpoint_every:g}")
    if store is not None:
        kwargs["store"] = Path(store)
    if data_dir is not None:
        kwargs["data_dir"] = Path(data_dir)
    if track_every is not None and track_every < 1:
        raise SpecError(f"--track-every must be >= 1, got {track_every}")
    return Execution(force=force, fuse=fuse, compile=bool(compile_), checkpoint_seconds=checkpoint_every,
                     track_layers=parse_track_layers(track_layers), track_every=track_every or 10,
                     **kwargs), precision


def _device_type(device: str) -> str:
    from . import engine

    return engine.resolve_device(device).type


def _check_tracked_layers(runs, execution) -> None:
    """--track-layers must name layers every model has: checked before anything is written."""
    if not execution.track_layers:
        return
    from . import data as D
    from . import engine
    from .models import init_model

    seen = set()
    for spec in runs:
        key = (spec.model, spec.depth, spec.width, spec.hidden, spec.bn)
        if key in seen:
            continue
        seen.add(key)
        shape, classes = D.peek(spec, execution.data_dir)
        try:
            engine.weight_layers(init_model(spec, classes, shape), execution.track_layers)
        except ValueError as exc:
            raise SpecError(f"--track-layers: {exc} (depth {spec.depth})") from None


def _run_all(runs, execution, as_json: bool, total_label: str, ray_address: str | None = None, use_ray=False):
    """Load data, train everything, print the summary; returns the rows and the seconds taken."""
    from . import executor

    _check_tracked_layers(runs, execution)
    datasets = executor.load_all(runs, execution)
    if use_ray:
        from .ray_executor import execute_ray

        def run_with(runs, execution, reporter):
            return execute_ray(runs, execution, datasets, reporter, ray_address)
    else:
        devices = _worker_devices(execution)

        def run_with(runs, execution, reporter):
            if len(devices) > 1:
                from .workers import execute_workers

                return execute_workers(runs, execution, datasets, devices, reporter)
            return executor.execute(runs, execution, datasets, reporter)
    def waiting(count: int, holders: list[dict]) -> None:
        who = ", ".join(sorted({f"pid {h.get('pid')} on {h.get('host')}" for h in holders})) or "another process"
        print(f"waiting for {count} run(s) that {who} is training in this store", file=sys.stderr)

    started = time.perf_counter()
    interactive = sys.stdout.isatty() and not as_json
    console = _console()
    try:
        if interactive:
            with RichReporter(console, len(runs)) as reporter:
                rows = executor.until_done(lambda rs, ex: run_with(rs, ex, reporter), runs, execution, waiting)
        else:
            reporter = PlainReporter(sys.stderr if as_json else sys.stdout, len(runs))
            rows = executor.until_done(lambda rs, ex: run_with(rs, ex, reporter), runs, execution, waiting)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    return rows, time.perf_counter() - started, console


def _worker_devices(execution) -> list[str]:
    """One worker per visible GPU (device auto or cuda), or --workers N on the chosen device."""
    import torch

    count = torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0
    if execution.workers is not None:
        if count > 0:
            return [f"cuda:{i % count}" for i in range(execution.workers)]
        return [execution.device if execution.device != "auto" else "cpu"] * execution.workers
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [execution.device]


def _json_runs(rows: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    keys = ("run_id", "dataset", "depth", "h", "seed", *extra, "status", "final_test_acc",
            "best_test_acc", "epochs_done", "params", "seconds")
    return [{k: _json_value(r.get(k)) for k in keys} for r in rows]


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


@app.command()
def train(
    dataset: Dataset = "two-moons",
    data_dir: DataDir = None,
    depth: Annotated[Optional[int], typer.Option(help="Depth: 6n+2 (images), 9/17/29/49 (text), blocks (two-moons).")] = None,
    h: Annotated[str, typer.Option("--h", help="Step factor(s), comma-separated: one run per value.")] = "0.1",
    seed: Annotated[str, typer.Option(help="Seed(s), comma-separated: one run per value.")] = "0",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    momentum: Momentum = 0.9,
    milestones: Milestones = None,
    gamma: Gamma = 0.1,
    weight_decay: WeightDecay = 0.0,
    optimizer: Optimizer = "sgd",
    bn: Bn = None,
    train_noise: Annotated[float, typer.Option(help="Noise level from 0 to 1 on the training inputs (test data stay clean).")] = 0.0,
    noise_kind: NoiseKind = None,
    limit_train: LimitTrain = None,
    limit_test: LimitTest = None,
    n_train: NTrain = None,
    n_test: NTest = None,
    moons_noise: MoonsNoise = None,
    like: Like = None,
    width: Width = None,
    hidden: Hidden = None,
    device: Device = "auto",
    precision: Precision = "auto",
    pack_size: PackSize = "auto",
    fuse: Fuse = None,
    compile_: Compile = False,
    checkpoint_every: CheckpointEvery = 10.0,
    track_layers: TrackLayers = None,
    track_every: TrackEvery = None,
    store: Store_ = None,
    force: Force = False,
    as_json: AsJson = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and print the configuration; train nothing.")] = False,
) -> None:
    """Train runs (one per h x seed) and record them in the store.

    Runs that differ only in h, seed and training noise train together as one fused network (a
    pack); each is stored as its own run.
    """
    from . import data as D
    from . import engine

    hs = parse_floats("--h", h)
    seeds = parse_ints("--seed", seed)
    milestone_list = None if milestones is None else parse_ints("--milestones", milestones, allow_empty=True)
    execution, precision = _execution(device, precision, pack_size, fuse, compile_, checkpoint_every, store,
                                      data_dir, force, track_layers, track_every)
    runs = [
        make_run_spec(
            dataset=dataset, depth=depth, h=hv, seed=sv, bn=bn, epochs=epochs, batch_size=batch_size,
            lr=lr, momentum=momentum, milestones=milestone_list, gamma=gamma, weight_decay=weight_decay,
            optimizer=optimizer, train_noise=train_noise, noise_kind=noise_kind, precision=precision,
            limit_train=limit_train, limit_test=limit_test, n_train=n_train, n_test=n_test,
            moons_noise=moons_noise, synthetic_like=like, width=width, hidden=hidden,
        )
        for sv in seeds for hv in hs
    ]
    # The same config twice would be one run: keep the first.
    runs = list({spec.run_id: spec for spec in runs}.values())

    if dry_run:
        torch_device = engine.resolve_device(execution.device)
        input_shape, num_classes = D.peek(runs[0], execution.data_dir)
        out = []
        for spec in runs:
            out.append({"run_id": spec.run_id, **spec.to_dict(), **engine.describe(spec, input_shape, num_classes),
                        "device": str(torch_device), "store": str(execution.store),
                        "data_dir": str(execution.data_dir)})
        if as_json:
            print(json.dumps({"runs": out}, indent=2))
        else:
            _print_dry_run(out)
        raise typer.Exit(EXIT_OK)

    rows, seconds, console = _run_all(runs, execution, as_json, "train")
    failed = any(r["status"] == "failed" for r in rows)
    if as_json:
        print(json.dumps({"runs": _json_runs(rows)}, indent=2))
    else:
        _print_summary(console, rows, execution.store, seconds)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------


@app.command()
def sweep(
    config: Annotated[Optional[Path], typer.Option(help="A sweep preset (YAML), e.g. sweeps/quick-moons.yaml; flags override its keys.")] = None,
    depths: Annotated[Optional[str], typer.Option(help="Depths, comma-separated, e.g. 20,110,218.")] = None,
    h: Annotated[Optional[str], typer.Option("--h", help="h grid: 0.1,0.5,1 (a list), 0.001..20 (1-2-5 steps per decade) or 0.001..1:7 (7 log-spaced).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="5 (seeds 0..4), 7,8,9 (those) or 3..6 (a range).")] = None,
    train_noise: Annotated[Optional[str], typer.Option(help="Training-noise levels, comma-separated, e.g. 0,0.1,0.2.")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    momentum: Momentum = None,
    milestones: Milestones = None,
    gamma: Gamma = None,
    weight_decay: WeightDecay = None,
    optimizer: Optimizer = None,
    bn: Bn = None,
    noise_kind: NoiseKind = None,
    limit_train: LimitTrain = None,
    limit_test: LimitTest = None,
    n_train: NTrain = None,
    n_test: NTest = None,
    moons_noise: MoonsNoise = None,
    like: Like = None,
    width: Width = None,
    hidden: Hidden = None,
    device: Device = None,
    precision: Precision = None,
    pack_size: PackSize = None,
    fuse: Fuse = None,
    compile_: Compile = None,
    checkpoint_every: CheckpointEvery = None,
    track_layers: TrackLayers = None,
    track_every: TrackEvery = None,
    store: Store_ = None,
    force: Force = False,
    as_json: AsJson = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (runs, packs, cost); train and write nothing.")] = False,
    executor_: Annotated[Optional[str], typer.Option("--executor", help="local (this process, one device) or ray (each pack a Ray task; pip install 'robustres[ray]').")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (HOST:PORT or 'auto'); default: start a local Ray.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local worker processes, packs queued to free ones (default: one per visible GPU, else 1).")] = None,
) -> None:
    """Train a depth x h x seed (x training-noise) grid: plan, pack, resume, record.

    Runs already completed or diverged in the store are skipped; an interrupted sweep resumes
    where it stopped when the same command runs again.
    """
    values = load_sweep_file(config) if config is not None else {}
    flags = dict(depths=depths, h=h, seeds=seeds, train_noise=train_noise, dataset=dataset, epochs=epochs,
                 batch_size=batch_size, lr=lr, momentum=momentum, milestones=milestones, gamma=gamma,
                 weight_decay=weight_decay, optimizer=optimizer, bn=bn, noise_kind=noise_kind,
                 limit_train=limit_train, limit_test=limit_test, n_train=n_train, n_test=n_test,
                 moons_noise=moons_noise, synthetic_like=like, width=width, hidden=hidden, device=device,
                 precision=precision, pack_size=pack_size, fuse=fuse, compile=compile_,
                 checkpoint_every=checkpoint_every, store=store, data_dir=data_dir, executor=executor_,
                 ray_address=ray_address, workers=workers, track_layers=track_layers, track_every=track_every)
    _run_sweep(_merge(values, flags), config, force, as_json, dry_run)


def _merge(file_values: dict, flags: dict) -> dict:
    """The file's values, then the flags'; remembers which came from the file (for error messages)."""
    given = {k: v for k, v in flags.items() if v is not None}
    return {**file_values, **given, "_from_file": frozenset(set(file_values) - set(given))}


def _sweep_execution(values: dict, force: bool):
    """The execution keys of a sweep (flags or YAML), validated; returns (Execution, precision)."""
    which = values.get("executor") or "local"
    if which not in ("local", "ray"):
        raise SpecError(f"unknown executor {which!r}; choose local or ray")
    if which == "ray" and importlib.util.find_spec("ray") is None:
        raise SpecError("--executor ray needs Ray: pip install 'robustres[ray]'")
    execution, resolved_precision = _execution(
        values.get("device"), values.get("precision"), None if values.get("pack_size") is None else str(values["pack_size"]),
        values.get("fuse"), values.get("compile"), values.get("checkpoint_every"), values.get("store"),
        values.get("data_dir"), force, values.get("track_layers"), values.get("track_every"))
    if values.get("workers") is not None:
        if values["workers"] < 1:
            raise SpecError(f"--workers must be >= 1, got {values['workers']}")
        execution = replace(execution, workers=values["workers"])
    return execution, resolved_precision


def _run_sweep(values: dict, config: Optional[Path], force: bool, as_json: bool, dry_run: bool) -> None:
    """The sweep command's work, from merged values (see `_merge`); also noise-eval's."""
    from . import executor

    from_file = values.pop("_from_file", frozenset())
    if config is not None and from_file & set(EXECUTION_KEYS):
        try:  # a bad execution value from the file: name the file
            _sweep_execution({k: values[k] for k in from_file & set(EXECUTION_KEYS)}, force)
        except SpecError as exc:
            raise SpecError(f"{config}: {exc}") from None
    if isinstance(values.get("seeds"), str) and values["seeds"].isdigit():
        values["seeds"] = int(values["seeds"])
    execution, resolved_precision = _sweep_execution(values, force)
    values["precision"] = resolved_precision
    grid = make_sweep_spec({k: v for k, v in values.items() if k not in EXECUTION_KEYS},
                           str(config) if config is not None else "flags")
    runs = list({spec.run_id: spec for spec in grid.runs()}.values())

    if dry_run:
        plan = _sweep_plan(runs, execution)
        if as_json:
            print(json.dumps(plan, indent=2))
        else:
            _print_plan(plan)
        raise typer.Exit(EXIT_OK)

    executor.load_all(runs, execution)  # missing data is bad input: fail before writing anything
    use_ray = (values.get("executor") or "local") == "ray"
    rows, seconds, console = _run_all(runs, execution, as_json, "sweep", values.get("ray_address"), use_ray)
    failed = sum(r["status"] == "failed" for r in rows)
    if as_json:
        print(json.dumps({"runs": _json_runs(rows, ("train_noise",)), "counts": _counts(rows)}, indent=2))
    else:
        _print_sweep_summary(console, rows, execution.store, seconds)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _counts(rows: list[dict]) -> dict:
    out = {s: 0 for s in ("completed", "diverged", "failed", "running")}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def _sweep_plan(runs, execution) -> dict:
    """The dry-run plan: runs total / done / to do, packs with K, device and estimated cost."""
    from . import data as D
    from . import engine
    from . import executor
    from .plan import make_packs, order_by_cost, pack_cost, train_size

    work = executor.survey(runs, execution)
    device = engine.resolve_device(execution.device)
    packs, warnings = [], []
    for key in dict.fromkeys(D.data_key(s) for s in work.todo):
        group = [s for s in work.todo if D.data_key(s) == key]
        try:
            shape, classes = D.peek(group[0], execution.data_dir)
        except DataError as exc:  # a plan can be made without the data; training cannot
            warnings.append(f"{exc} (training would stop here)")
            shape, classes = D.peek(group[0].with_(dataset="synthetic", synthetic_like=_LIKE[group[0].modality]),
                                    execution.data_dir)
        made = make_packs(group, execution.pack_size, work.epochs_done)
        costs = [pack_cost(p, executor.flops_per_image(p.runs[0], shape, classes)) for p in made]
        for pack, cost in zip(order_by_cost(made, costs), sorted(costs, reverse=True)):
            first = pack.runs[0]
            packs.append({"dataset": first.dataset, "depth": first.depth, "k": pack.k, "epochs": first.epochs,
                          "start_epoch": pack.start_epoch, "train_images": train_size(first),
                          "h": sorted({s.h for s in pack.runs}), "seeds": sorted({s.seed for s in pack.runs}),
                          "train_noise": sorted({s.train_noise for s in pack.runs}), "device": str(device),
                          "tflop": cost / 1e12, "run_ids": [s.run_id for s in pack.runs]})
    return {"runs_total": len(runs), "runs_done": len(work.finished), "runs_todo": len(work.todo),
            "pack_size": execution.pack_size or "auto", "store": str(execution.store), "packs": packs,
            "warnings": warnings}


_LIKE = {"image": "cifar10", "text": "ag-news", "points": "two-moons"}


def _print_plan(plan: dict) -> None:
    console = _console()
    table = Table(title=f"robustres sweep --dry-run: {plan['runs_total']} runs, {plan['runs_done']} done, "
                        f"{plan['runs_todo']} to do, in {len(plan['packs'])} pack(s); nothing trained")
    for col in ("#", "dataset", "depth", "K", "h", "seeds", "noise", "epochs", "device", "cost"):
        table.add_column(col, justify="left" if col in ("dataset", "h", "seeds", "noise", "device") else "right")
    for i, p in enumerate(plan["packs"], 1):
        epochs = f"{p['start_epoch']}->{p['epochs']}" if p["start_epoch"] else str(p["epochs"])
        table.add_row(str(i), p["dataset"], str(p["depth"]), str(p["k"]), _short(p["h"]), _short(p["seeds"]),
                      _short(p["train_noise"]), epochs, p["device"], _flop(p["tflop"] * 1e12))
    console.print(table)
    total = sum(p["tflop"] for p in plan["packs"])
    console.print(f"estimated training cost {_flop(total * 1e12)} (3x forward multiply-adds per image and epoch); "
                  f"pack size {plan['pack_size']}; store {plan['store']}")
    for warning in plan["warnings"]:
        console.print(f"warning: {warning}")


def _flop(x: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= scale:
            return f"{x / scale:,.1f} {unit}"
    return f"{x / 1e6:,.1f} MFLOP"


def _short(values: list) -> str:
    text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return text if len(text) <= 40 else text[:37] + "..."


def _print_sweep_summary(console: Console, rows: list[dict], store: Path, seconds: float) -> None:
    """Per dataset, depth and training noise: each h's completed / diverged / failed runs and the
    median final test accuracy; the best median is marked (`robustres report` goes further)."""
    import statistics

    groups: dict[tuple, dict[float, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["depth"], r["train_noise"]), {}).setdefault(r["h"], []).append(r)
    counts = _counts(rows)
    console.print(f"robustres sweep: {len(rows)} runs in {seconds:.1f}s: {counts['completed']} completed, "
                  f"{counts['diverged']} diverged, {counts['failed']} failed; store {store}")
    for (dataset, depth, noise), by_h in groups.items():
        medians = {}
        for hv, rs in by_h.items():
            accs = [r["final_test_acc"] for r in rs if r["status"] == "completed"]
            medians[hv] = statistics.median(accs) if accs else None
        best = max((m, hv) for hv, m in medians.items() if m is not None)[1] if any(
            m is not None for m in medians.values()) else None
        title = f"{dataset} depth {depth}" + (f", training noise {noise:g}" if noise else "")
        table = Table(title=title)
        for col in ("h", "runs", "completed", "diverged", "failed", "median final test %"):
            table.add_column(col, justify="right")
        for hv in sorted(by_h):
            rs = by_h[hv]
            mark = " <- best" if hv == best else ""
            table.add_row(f"{hv:g}", str(len(rs)), str(sum(r["status"] == "completed" for r in rs)),
                          str(sum(r["status"] == "diverged" for r in rs)), str(sum(r["status"] == "failed" for r in rs)),
                          _pct(medians[hv]) + mark)
        console.print(table)


def _json_value(v):
    if isinstance(v, float) and v != v:
        return None
    return v


def _console() -> Console:
    # Wide enough for the tables when the output goes to a file or a CI log.
    return Console() if sys.stdout.isatty() else Console(width=120)


def _print_dry_run(out: list[dict]) -> None:
    console = _console()
    table = Table(title=f"robustres train --dry-run: {len(out)} run(s), nothing trained")
    for col in ("run_id", "dataset", "model", "depth", "h", "seed", "epochs", "batch", "lr", "params", "MFLOPs/img"):
        table.add_column(col, justify="left" if col in ("run_id", "dataset", "model") else "right")
    for r in out:
        table.add_row(r["run_id"], r["dataset"], r["model"], str(r["depth"]), f"{r['h']:g}", str(r["seed"]),
                      str(r["epochs"]), str(r["batch_size"]), f"{r['lr']:g}", f"{r['params']:,}",
                      f"{r['flops_per_image'] / 1e6:.2f}")
    console.print(table)
    first = out[0]
    console.print(f"device {first['device']}, store {first['store']}, data {first['data_dir']}")


def _print_summary(console: Console, rows: list[dict], store: Path, seconds: float) -> None:
    table = Table(title=f"robustres train: {len(rows)} run(s) in {seconds:.1f}s, store {store}")
    for col in ("run_id", "dataset", "depth", "h", "seed", "status", "final test %", "best test %", "epochs", "seconds"):
        table.add_column(col, justify="left" if col in ("run_id", "dataset", "status") else "right")
    for r in rows:
        epochs = f"{r['epochs_done']}/{r['epochs']}"
        table.add_row(r["run_id"], r["dataset"], str(r["depth"]), f"{r['h']:g}", str(r["seed"]), r["status"],
                      _pct(r.get("final_test_acc")), _pct(r.get("best_test_acc")), epochs,
                      f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-")
    console.print(table)
    for r in rows:
        if r["status"] in ("diverged", "failed"):
            console.print(f"{r['run_id']} h={r['h']:g}: {_status_text(r)}")


# ---------------------------------------------------------------------------------------------
# noise-eval
# ---------------------------------------------------------------------------------------------


@app.command("noise-eval")
def noise_eval(
    mode: Annotated[str, typer.Option(help="train-noise (train on noisy inputs: a sweep over --levels) or test-noise (evaluate trained runs on corrupted test inputs).")] = "test-noise",
    levels: Annotated[str, typer.Option(help="Noise levels from 0 to 1, comma-separated.")] = "0,0.1,0.2,0.3",
    kinds: Annotated[Optional[str], typer.Option(help="Noise kinds, comma-separated: gaussian, salt-pepper, mosaic (images), char-swap (text), gaussian (points). Default: the data's first.")] = None,
    propagation: Annotated[bool, typer.Option("--propagation", help="test-noise: also record, per block, ||x_n(noisy) - x_n(clean)|| / ||x_n(clean)||.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="The runs of this sweep preset (test-noise), or its keys (train-noise).")] = None,
    dataset: Dataset = None,
    depth: Annotated[Optional[str], typer.Option("--depth", "--depths", help="Depth(s), comma-separated.")] = None,
    h: Annotated[Optional[str], typer.Option("--h", help="h values (a list or a range, as in sweep).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="train-noise: 5 (seeds 0..4), 7,8,9 or 3..6.")] = None,
    data_dir: DataDir = None,
    epochs: Epochs = None,
    lr: Lr = None,
    milestones: Milestones = None,
    limit_train: LimitTrain = None,
    limit_test: LimitTest = None,
    device: Device = None,
    precision: Precision = None,
    pack_size: PackSize = None,
    fuse: Fuse = None,
    compile_: Compile = None,
    checkpoint_every: CheckpointEvery = None,
    store: Store_ = None,
    as_json: AsJson = False,
) -> None:
    """The paper's robustness instruments: training on noisy inputs (Fig. 5), accuracy on corrupted
    test inputs, and how input noise grows through the blocks (Prop. 2)."""
    level_list = parse_floats("--levels", levels)
    for level in level_list:
        if not 0 <= level <= 1:
            raise SpecError(f"--levels: a noise level is in [0, 1], got {level:g}")
    kind_list = [k.strip() for k in kinds.split(",")] if kinds else []
    from .spec import NOISE_KINDS

    known = sorted({k for ks in NOISE_KINDS.values() for k in ks})
    for kind in kind_list:
        if kind not in known:
            raise SpecError(f"unknown noise kind {kind!r}; choose: {', '.join(known)}")
    if mode == "train-noise":
        if propagation:
            raise SpecError("--propagation goes with --mode test-noise (it reads trained checkpoints)")
        if len(kind_list) > 1:
            raise SpecError("--mode train-noise trains with one noise kind at a time")
        values = load_sweep_file(config) if config is not None else {}
        flags = dict(dataset=dataset, depths=depth, h=h, seeds=seeds, epochs=epochs, lr=lr, milestones=milestones,
                     limit_train=limit_train, limit_test=limit_test, device=device, precision=precision,
                     pack_size=pack_size, fuse=fuse, compile=compile_, checkpoint_every=checkpoint_every,
                     store=store, data_dir=data_dir, noise_kind=kind_list[0] if kind_list else None)
        values = _merge(values, {**flags, "train_noise": level_list})
        _run_sweep(values, config, False, as_json, False)
    if mode != "test-noise":
        raise SpecError(f"unknown mode {mode!r}; choose train-noise or test-noise")
    training_only = {"--milestones": milestones, "--precision": precision, "--pack-size": pack_size,
                     "--fuse/--no-fuse": fuse, "--compile": compile_, "--checkpoint-every": checkpoint_every}
    for flag, value in training_only.items():
        if value is not None:
            raise SpecError(f"{flag} goes with --mode train-noise (test-noise trains nothing)")
    _test_noise(level_list, kind_list, propagation, config, dataset, depth, h, data_dir, limit_test, device, store,
                as_json)


def _test_noise(levels, kinds, with_propagation, config, dataset, depth, h, data_dir, limit_test, device, store,
                as_json) -> None:
    """Evaluate completed runs of the store on corrupted test inputs; write noise_evals (and propagation)."""
    from . import data as D
    from . import engine
    from . import report as R
    from .spec import NOISE_KINDS
    from .store import Store, spec_from_row

    execution, _ = _execution(device, None, None, None, None, None, store, data_dir, False)
    the_store = Store(execution.store, write_cache=False)  # nothing is written before the input is checked
    planned = None
    if config is not None:
        values = load_sweep_file(config)
        grid_values = {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
        grid_values.setdefault("precision", _default_precision(values.get("device")))
        planned = frozenset(s.run_id for s in make_sweep_spec(grid_values, str(config)).runs())
    filters = R.Filters(datasets=(dataset,) if dataset else (), depths=tuple(parse_ints("--depth", depth)) if depth else (),
                        hs=tuple(parse_h_grid(h)) if h else (), run_ids=planned)
    rows = the_store.runs()
    rows = R.select(rows, filters)
    rows = rows[rows.status == "completed"]
    if rows.empty:
        print(f"error: no completed runs in {the_store.root} match", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    specs = [spec_from_row(r) for r in rows.to_dict(orient="records")]
    for spec in specs:
        allowed = NOISE_KINDS[spec.modality]
        for kind in kinds or [allowed[0]]:
            if kind not in allowed:
                raise SpecError(f"noise kind {kind!r} does not apply to {spec.modality} data; choose: {', '.join(allowed)}")
    torch_device = engine.resolve_device(execution.device)
    cache: dict = {}
    results = []
    evaluated = 0
    for spec in specs:
        key = D.data_key(spec.with_(limit_test=limit_test or spec.limit_test))
        if key not in cache:
            cache.clear()
            cache[key] = D.load(spec.with_(limit_test=limit_test or spec.limit_test), execution.data_dir).to(torch_device)
        data = cache[key]
        try:
            model = engine.load_trained(spec, the_store.checkpoint_path(spec.run_id), data, torch_device)
        except FileNotFoundError:
            the_store.warn(f"skipping run {spec.run_id}: its checkpoint {the_store.checkpoint_path(spec.run_id)} "
                           f"is missing or unreadable")
            continue
        evaluated += 1
        evals, props = [], []
        for kind in kinds or [NOISE_KINDS[spec.modality][0]]:
            for level in levels:
                acc = engine.accuracy_under_noise(model, data, kind, level)
                evals.append({"kind": kind, "level": level, "accuracy": acc, "n_test": len(data.test_y)})
                results.append({"run_id": spec.run_id, "dataset": spec.dataset, "depth": spec.depth, "h": spec.h,
                                "seed": spec.seed, "kind": kind, "level": level, "accuracy": acc})
                if with_propagation and level > 0:
                    for block, value in enumerate(engine.propagation(model, data, kind, level)):
                        props.append({"kind": kind, "level": level, "block": block, "value": value})
        the_store.put_noise_evals(spec.run_id, evals)
        if props:
            the_store.put_propagation(spec.run_id, props)
    if not evaluated:
        print(f"error: none of the {len(specs)} matching runs has a usable checkpoint", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    if as_json:
        print(json.dumps({"noise_evals": results}, indent=2))
        raise typer.Exit(EXIT_OK)
    import pandas as pd

    frame = pd.DataFrame(results)
    table = Table(title=f"robustres noise-eval: {evaluated} run(s), accuracy on corrupted test inputs "
                        f"(median over seeds), store {the_store.root}")
    lvls = sorted(frame.level.unique())
    for col in ["dataset", "depth", "h", "kind"] + [f"{lv:g}" for lv in lvls]:
        table.add_column(col, justify="left" if col in ("dataset", "kind") else "right")
    for (ds, dp, hv, kind), g in frame.groupby(["dataset", "depth", "h", "kind"]):
        med = g.groupby("level").accuracy.median()
        table.add_row(ds, str(dp), f"{hv:g}", kind, *[_pct(med.get(lv)) for lv in lvls])
    _console().print(table)
    if with_propagation:
        prop = the_store.propagation()
        prop = prop[prop.run_id.isin([s.run_id for s in specs])].merge(
            pd.DataFrame([{"run_id": s.run_id, "depth": s.depth, "h": s.h} for s in specs]), on="run_id")
        last = prop[prop.block == prop.groupby("run_id").block.transform("max")]
        for (dp, hv, kind, lv), g in last.groupby(["depth", "h", "kind", "level"]):
            print(f"depth {dp} h {hv:g} {kind} {lv:g}: relative perturbation at the last block, median "
                  f"{g.value.median():.3f}")
    raise typer.Exit(EXIT_OK)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

FORMATS = ("table", "json", "csv", "markdown")


@app.command()
def report(
    store: Store_ = None,
    config: Annotated[Optional[Path], typer.Option(help="Only the runs of this sweep preset (YAML).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Only these datasets, comma-separated.")] = None,
    depths: Annotated[Optional[str], typer.Option(help="Only these depths, comma-separated.")] = None,
    h: Annotated[Optional[str], typer.Option("--h", help="Only these h (a list or a range, as in sweep).")] = None,
    train_noise: Annotated[Optional[str], typer.Option(help="Only these training-noise levels.")] = None,
    min_seeds: Annotated[int, typer.Option(help="Completed runs an h needs to be recommended; a gate too.")] = 3,
    max_failures: Annotated[Optional[int], typer.Option(help="Gate: exit 1 when more runs than this failed.")] = None,
    require_complete: Annotated[bool, typer.Option("--require-complete", help="Gate: exit 1 unless every run of --config is finished in the store.")] = False,
    format_: Annotated[str, typer.Option("--format", help="table, json, csv or markdown.")] = "table",
    plot: Annotated[Optional[Path], typer.Option(help="Write the paper's figures (PNG and SVG) into this folder.")] = None,
) -> None:
    """Which h to use at each depth, and how sure: tables, JSON/CSV/markdown, figures, CI gates.

    Exit codes: 0 fine, 1 a gate failed or nothing matched, 2 bad input.
    """
    from . import report as R
    from .store import Store

    if format_ not in FORMATS:
        raise SpecError(f"unknown format {format_!r}; choose one of: {', '.join(FORMATS)}")
    if min_seeds < 1:
        raise SpecError(f"--min-seeds must be >= 1, got {min_seeds}")
    if max_failures is not None and max_failures < 0:
        raise SpecError(f"--max-failures must be >= 0, got {max_failures}")
    if require_complete and config is None:
        raise SpecError("--require-complete needs --config: which runs should be there?")
    planned = None
    if config is not None:
        values = load_sweep_file(config)
        grid_values = {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
        grid_values.setdefault("precision", _default_precision(values.get("device")))
        planned = make_sweep_spec(grid_values, str(config)).runs()
    filters = R.Filters(
        datasets=tuple(x.strip() for x in dataset.split(",")) if dataset else (),
        depths=tuple(parse_ints("--depths", depths)) if depths else (),
        hs=tuple(parse_h_grid(h)) if h else (),
        train_noises=tuple(parse_floats("--train-noise", train_noise)) if train_noise else (),
        run_ids=frozenset(s.run_id for s in planned) if planned is not None else None,
    )
    the_store = Store(store if store is not None else Execution().store)
    runs = R.select(the_store.runs(columns=R.RUN_COLUMNS), filters)
    failures = []
    if runs.empty:
        if planned is not None and require_complete:
            print(f"gate failed: 0 of {len(planned)} runs of {config} are in the store (not finished)", file=sys.stderr)
        else:
            print(f"error: no runs in {the_store.root} match", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    groups, recs, warnings = R.recommend(R.aggregate(runs), runs, min_seeds)
    if max_failures is not None and (runs.status == "failed").sum() > max_failures:
        failures.append(f"{int((runs.status == 'failed').sum())} runs failed, more than --max-failures {max_failures}")
    if planned is not None and require_complete:
        finished = set(runs[runs.status.isin(["completed", "diverged"])].run_id)
        missing = [s for s in planned if s.run_id not in finished]
        if missing:
            failures.append(f"{len(missing)} of {len(planned)} runs of {config} are not finished in the store")
    short = groups[(groups.completed < min_seeds)]
    if not short.empty and _gate_min_seeds_given():
        failures.append(f"{len(short)} (depth, h) groups have fewer than {min_seeds} completed runs")

    files, summaries = [], []
    if plot is not None:
        files = R.plot(groups, the_store.epochs(), runs, plot)
        ids = set(runs.run_id)
        pick = lambda df: df[df.run_id.isin(ids)]  # noqa: E731
        more, summaries = R.plot_instruments(pick(the_store.noise_evals()), pick(the_store.propagation()),
                                             pick(the_store.layer_stats()), runs, plot)
        files += more + _moons_figures(the_store, runs, plot)
    if format_ == "json":
        print(json.dumps(_report_json(groups, recs, warnings + failures, files), indent=2))
    elif format_ == "csv":
        print(groups.to_csv(index=False), end="")
    elif format_ == "markdown":
        print(_report_markdown(groups, recs, warnings + failures))
    else:
        _print_report(groups, recs, warnings, min_seeds)
        for line in summaries:
            print(line)
        for path in files:
            print(f"wrote {path}")
    for failure in failures:
        print(f"gate failed: {failure}", file=sys.stderr)
    raise typer.Exit(EXIT_FAILED if failures else EXIT_OK)


def _moons_figures(store, runs, folder) -> list:
    """Fig. 4 for completed two-moons runs of width 2 (first seed of each h), per depth."""
    done = runs[(runs.dataset == "two-moons") & (runs.status == "completed") & (runs.width == 2)]
    if done.empty:
        return []
    from . import data as D
    from . import engine
    from . import report as R
    from .store import spec_from_row

    full = store.runs().set_index("run_id")
    written = []
    for depth, g in done.groupby("depth"):
        chosen = g.sort_values("seed").groupby("h").head(1).sort_values("h")
        models, data = [], None
        for run_id in chosen.run_id:
            spec = spec_from_row({**full.loc[run_id].to_dict(), "run_id": run_id})
            data = data or D.load(spec, Path("."))
            try:
                models.append((spec.h, engine.load_trained(spec, store.checkpoint_path(run_id), data,
                                                           engine.resolve_device("cpu"))))
            except FileNotFoundError:
                continue
        if models:
            written += R.plot_moons_features(models, data.test_x[:500], data.test_y[:500], folder, int(depth))
    return written


def _gate_min_seeds_given() -> bool:
    """--min-seeds is a gate only when given explicitly (it always drives the recommendation)."""
    return any(a == "--min-seeds" or a.startswith("--min-seeds=") for a in _ARGV)


_ARGV: list[str] = []


def _default_precision(device) -> str:
    return "bf16" if _device_type(device or "auto") == "cuda" else "fp32"


def _records(df) -> list[dict]:
    return [{k: _json_value(v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def _report_json(groups, recs, warnings, files) -> dict:
    return {"schema_version": 1, "groups": _records(groups), "recommendations": recs, "warnings": warnings,
            "figures": [str(f) for f in files]}


def _report_markdown(groups, recs, warnings) -> str:
    lines = ["| dataset | protocol | depth | noise | h | runs | completed | diverged | failed | median final % | std | "
             "best-epoch median % | label |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in groups.itertuples():
        lines.append(f"| {r.dataset} | {r.protocol} | {r.depth} | {r.train_noise:g} | {r.h:g} | {r.runs} | {r.completed} | "
                     f"{r.diverged} | {r.failed} | {_pct(r.final_median)} | {_pct(r.final_std)} | "
                     f"{_pct(r.best_epoch_median)} | {r.label} |")
    lines.append("")
    for rec in recs:
        lines.append(f"- **{rec['dataset']}, depth {rec['depth']}**: {rec['reason']}")
    lines += [f"- warning: {w}" for w in warnings]
    return "\n".join(lines)


def _print_report(groups, recs, warnings, min_seeds: int) -> None:
    console = _console()
    by_block = {(r["dataset"], r["protocol"], r["depth"], r["train_noise"]): r for r in recs}
    for (dataset, protocol), g in groups.groupby(["dataset", "protocol"], sort=True):
        noisy = g.train_noise.nunique() > 1 or (g.train_noise != 0).any()
        table = Table(title=f"robustres report: {dataset}" + (f" ({protocol})" if protocol else ""),
                      caption="final = test accuracy after the last epoch (recommendations use it); "
                              "best epoch = the best epoch's, what the paper reports")
        cols = ["depth"] + (["noise"] if noisy else []) + ["h", "runs", "done", "div", "fail", "final % median",
                                                          "std", "min-max", "best epoch %", "label"]
        for col in cols:
            table.add_column(col, justify="left" if col == "label" else "right")
        last = None
        for r in g.itertuples():
            block = (r.dataset, r.protocol, r.depth, r.train_noise)
            if last is not None and block != last:
                table.add_section()
            last = block
            label = r.label + (" <- recommended" if r.label == "best" else "")
            spread = "-" if pd_isna(r.final_min) else f"{100 * r.final_min:.1f}-{100 * r.final_max:.1f}"
            table.add_row(str(r.depth), *([f"{r.train_noise:g}"] if noisy else []), f"{r.h:g}", str(r.runs),
                          str(r.completed), str(r.diverged), str(r.failed), _pct(r.final_median), _pct(r.final_std),
                          spread, _pct(r.best_epoch_median), label,
                          style="bold" if r.label == "best" else None)
        console.print(table)
        for block, rec in by_block.items():
            if block[:2] != (dataset, protocol):
                continue
            where = f"depth {block[2]}" + (f", noise {block[3]:g}" if block[3] else "")
            line = f"{where}: {rec['reason']}"
            vs = rec.get("vs_h1")
            if vs:
                diff = "" if vs["median_diff"] is None else f"median {100 * vs['median_diff']:+.1f} points, "
                line += (f". Against h=1 over {vs['seeds']} paired seeds: {diff}wins {vs['wins']}/{vs['seeds']} "
                         f"(sign test p={vs['sign_test_p']:.2f}; a divergence loses)")
            console.print(line)
    for w in warnings:
        console.print(f"warning: {w}")


def pd_isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------------------------------------
# doctor
# ---------------------------------------------------------------------------------------------


def _size(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@app.command()
def doctor(
    store: Store_ = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """What a bug report needs: versions, devices, the store and the data folder. Exit code 1 when
    the store cannot be read."""
    from .doctor import gather
    from .spec import default_data_dir, default_store

    info = gather(store or default_store(), data_dir or default_data_dir())
    broken = "error" in info["store"]
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        console = _console()
        console.print(" ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None and k != "platform"))
        console.print(f"platform {info['versions']['platform']}")
        for d in info["devices"]:
            free = f", {_size(d['free_bytes'])} free" if d["free_bytes"] is not None else ""
            console.print(f"device {d['device']}: {d['name']}, {d['cores']} cores/SMs, "
                          f"{_size(d['memory_bytes'])} memory{free}")
        st = info["store"]
        if broken:
            console.print(f"store {st['path']}: [red]{st['error']}[/red]")
        elif not st["exists"]:
            console.print(f"store {st['path']}: not created yet")
        else:
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(st["by_status"].items())) or "no runs"
            console.print(f"store {st['path']}: {_size(st['bytes'])} in {st['files']} files, {st['runs']} runs "
                          f"({statuses}), {st['unreadable_files']} unreadable files, "
                          f"{st['runs_being_trained']} runs being trained now")
        dd = info["data"]
        console.print(f"data {dd['path']}" + ("" if dd["exists"] else " (does not exist)") + ": "
                      + ", ".join(f"{k} ({v})" for k, v in dd["datasets"].items()))
    if broken:
        print(f"error: {info['store']['error']}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_OK)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        print(f"robustres {__version__}")
        raise typer.Exit(EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors are one line on stderr."""
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="robustres", standalone_mode=False)
    except (SpecError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except click_exceptions.NoArgsIsHelpError:
        return EXIT_BAD_INPUT  # the help text was shown
    except click_exceptions.UsageError as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, typer.Abort):
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    return rv if isinstance(rv, int) else EXIT_OK


def run() -> None:
    sys.exit(main())
