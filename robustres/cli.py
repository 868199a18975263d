"""The `robustres` command line: thin Typer commands over spec -> executor -> store.

Bad input exits with code 2 and one line on stderr ("error: ..."), before anything is written.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

try:  # typer >= 0.29 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions

from . import __version__
from .data import DataError
from .spec import Execution, SpecError, check_device, make_run_spec, parse_floats, parse_ints
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
    """Timestamped lines, for logs and CI (stdout is not a terminal)."""

    def __init__(self, stream):
        self.stream = stream

    def _say(self, text: str) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}", file=self.stream, flush=True)

    def pack_started(self, pack, index, total, fused):
        how = "fused" if fused or pack.k == 1 else "in turn"
        more = f", resuming after epoch {pack.start_epoch}" if pack.start_epoch else ""
        self._say(f"pack {index + 1}/{total}: {pack.k} run(s) ({how}), {_members(pack)}, "
                  f"{pack.runs[0].epochs} epochs{more}")

    def step(self, done, total):
        pass

    def epoch(self, spec, r):
        # About ten lines per run: the first epoch, every tenth of the run, and the last.
        every = max(1, spec.epochs // 10)
        if r.epoch != 1 and r.epoch % every and r.epoch != spec.epochs:
            return
        self._say(f"{spec.run_id[:8]} {_label(spec)}: epoch {r.epoch}/{spec.epochs} loss {r.train_loss:.4f} "
                  f"train {100 * r.train_acc:.1f}% test {100 * r.test_acc:.1f}% ({r.seconds:.1f}s)")

    def run_finished(self, spec, row, reused):
        if reused:
            self._say(f"{spec.run_id[:8]} {_label(spec)}: {row['status']} in the store, not retrained (--force retrains)")
        else:
            self._say(f"{spec.run_id[:8]} {_label(spec)}: {_status_text(row)}")


class RichReporter:
    """A live progress bar per pack: epochs done, with the range of its runs' test accuracy."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
        )
        self.task = None
        self.last: dict[str, float] = {}

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
        if reused:
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
# train
# ---------------------------------------------------------------------------------------------


@app.command()
def train(
    dataset: str = typer.Option("two-moons", help="two-moons, cifar10, imagefolder, ag-news or synthetic."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder [default: $ROBUSTRES_DATA, else ~/.cache/robustres]."),
    depth: Optional[int] = typer.Option(None, help="Depth: 6n+2 (images), 9/17/29/49 (text), blocks (two-moons)."),
    h: str = typer.Option("0.1", "--h", help="Step factor(s), comma-separated: one run per value."),
    seed: str = typer.Option("0", help="Seed(s), comma-separated: one run per value."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: the paper's protocol for the dataset]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size [default: per dataset]."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate [default: 0.1]."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    milestones: Optional[str] = typer.Option(None, help="Epochs after which lr is multiplied by gamma, e.g. 40,60; 'none' for a fixed lr."),
    gamma: float = typer.Option(0.1, help="Learning-rate factor at each milestone."),
    weight_decay: float = typer.Option(0.0, help="Weight decay (the paper uses none)."),
    optimizer: str = typer.Option("sgd", help="sgd or adam."),
    bn: Optional[bool] = typer.Option(None, "--bn/--no-bn", help="BatchNorm in every block [default: on, off for two-moons]."),
    train_noise: float = typer.Option(0.0, help="Noise level in [0, 1] on the training inputs (test data stay clean)."),
    noise_kind: Optional[str] = typer.Option(None, help="gaussian (images, points) or char-swap (text)."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a fixed, class-balanced subset of N examples."),
    limit_test: Optional[int] = typer.Option(None, help="Test on a fixed, class-balanced subset of N examples."),
    n_train: Optional[int] = typer.Option(None, help="Generated datasets: training examples [two-moons 1000]."),
    n_test: Optional[int] = typer.Option(None, help="Generated datasets: test examples [two-moons 1000]."),
    moons_noise: Optional[float] = typer.Option(None, help="Two-moons: std of the points' noise [0.2]."),
    like: Optional[str] = typer.Option(None, help="Synthetic data: the dataset whose shape it imitates [cifar10]."),
    width: Optional[int] = typer.Option(None, help="MLP ResNet: feature width [2]."),
    hidden: Optional[int] = typer.Option(None, help="MLP ResNet: hidden width inside a block [16]."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="fp32, or bf16 autocast [auto: bf16 on CUDA, fp32 on the CPU]."),
    pack_size: str = typer.Option("auto", help="Most runs trained together as one network; auto: as many as fit."),
    fuse: Optional[bool] = typer.Option(None, "--fuse/--no-fuse", help="Fused network or models in turn [default: measured]."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    checkpoint_every: float = typer.Option(10.0, help="Checkpoint at an epoch's end once this many seconds passed since the last (0: every epoch); always after the last epoch."),
    store: Optional[Path] = typer.Option(None, help="Store folder [default: $ROBUSTRES_STORE, else ./robustres-store]."),
    force: bool = typer.Option(False, "--force", help="Retrain runs that the store already holds."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (progress goes to stderr)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and print the configuration; train nothing."),
) -> None:
    """Train runs (one per h x seed) and record them in the store.

    Runs that differ only in h, seed and training noise train together as one fused network (a
    pack); each is stored as its own run.
    """
    from . import data as D
    from . import engine, executor

    hs = parse_floats("--h", h)
    seeds = parse_ints("--seed", seed)
    kwargs = {"device": check_device(device)}
    torch_device = engine.resolve_device(kwargs["device"])
    if precision == "auto":
        precision = "bf16" if torch_device.type == "cuda" else "fp32"
    if pack_size != "auto":
        sizes = parse_ints("--pack-size", pack_size)
        if len(sizes) != 1 or sizes[0] < 1:
            raise SpecError(f"--pack-size must be auto or a whole number >= 1, got {pack_size!r}")
        kwargs["pack_size"] = sizes[0]
    milestone_list = None if milestones is None else parse_ints("--milestones", milestones, allow_empty=True)
    runs = [
        make_run_spec(
            dataset=dataset, depth=depth, h=hv, seed=sv, bn=bn, epochs=epochs, batch_size=batch_size,
            lr=lr, momentum=momentum, milestones=milestone_list, gamma=gamma, weight_decay=weight_decay,
            optimizer=optimizer, train_noise=train_noise, noise_kind=noise_kind, precision=precision,
            limit_train=limit_train,
            limit_test=limit_test, n_train=n_train, n_test=n_test, moons_noise=moons_noise,
            synthetic_like=like, width=width, hidden=hidden,
        )
        for sv in seeds for hv in hs
    ]
    # The same config twice would be one run: keep the first.
    runs = list({spec.run_id: spec for spec in runs}.values())
    if store is not None:
        kwargs["store"] = store
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if not checkpoint_every >= 0:
        raise SpecError(f"--checkpoint-every must be >= 0 seconds, got {checkpoint_every:g}")
    execution = Execution(force=force, fuse=fuse, compile=compile_, checkpoint_seconds=checkpoint_every, **kwargs)

    if dry_run:
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

    datasets = executor.load_all(runs, execution)
    started = time.perf_counter()
    interactive = sys.stdout.isatty() and not as_json
    console = _console()
    try:
        if interactive:
            with RichReporter(console) as reporter:
                rows = executor.execute(runs, execution, datasets, reporter)
        else:
            rows = executor.execute(runs, execution, datasets, PlainReporter(sys.stderr if as_json else sys.stdout))
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    failed = any(r["status"] == "failed" for r in rows)
    if as_json:
        keys = ("run_id", "dataset", "depth", "h", "seed", "status", "final_test_acc", "best_test_acc",
                "epochs_done", "params", "seconds")
        print(json.dumps({"runs": [{k: _json_value(r.get(k)) for k in keys} for r in rows]}, indent=2))
    else:
        _print_summary(console, rows, execution.store, time.perf_counter() - started)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


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
