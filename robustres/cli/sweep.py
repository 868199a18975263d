"""robustres sweep: a depth x h x seed (x training noise, lr, optimizer, ...) grid from a preset and/or flags."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..grid import list_presets as presets
from ..grid import merge_preset, sweep_runs
from . import render
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import execution_of, given_precision, resolve_precisions, train_with_progress
from .options import AsJson, AxisCommand, Force, execution_options, grid_options, run_options, with_options

HELP = ("Train a depth x h x seed grid (x training noise, lr, optimizer, BN, momentum, weight decay, batch size: "
        "each of them an axis when given a list): plan, pack, resume, record. Runs already completed or diverged "
        "in the store are skipped; an interrupted sweep resumes where it stopped when the same command runs again.")


@app.command(help=HELP, short_help="Train a depth x h x seed grid: plan, pack, resume, record.", cls=AxisCommand,
             epilog=examples("robustres sweep --config quick-moons",
                             "robustres sweep --dataset two-moons --depths 4,30 --h 0.01..2 --seeds 3 --epochs 30",
                             "robustres sweep --dataset two-moons --depths 10,30 --h 0.05,0.2,1 --lr 0.02,0.2,1 "
                             "--optimizer sgd,adam --bn on,off",
                             "robustres sweep --config fig6-cifar10 --dry-run"))
@with_options(run_options(), execution_options(sweep=True), lead=grid_options())
def sweep(
    options: dict,
    force: Force = False,
    as_json: AsJson = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (runs, packs, cost); train and write nothing.")] = False,
    list_presets: Annotated[bool, typer.Option(
        "--list-presets", help="List the packaged presets (names for --config) with their descriptions.")] = False,
) -> None:
    if list_presets:
        render.print_presets(presets())
        raise typer.Exit(EXIT_OK)
    config = options.pop("config", None)
    values = merge_preset(config, options)
    raise typer.Exit(run_sweep(values, config, force, as_json, dry_run))


def run_sweep(values: dict, config: Optional[Path], force: bool, as_json: bool, dry_run: bool) -> int:
    """Train (or plan) merged sweep values, print the outcome; the exit code. Also noise-eval's
    train-noise mode."""
    execution = execution_of(values, force)
    runs = sweep_runs(values, str(config) if config is not None else "flags", given_precision(values))
    runs = resolve_precisions(runs, values, execution)
    if dry_run:
        from ..execution.dryrun import dry_run as plan

        made = plan(runs, execution)
        if as_json:
            print(render.dumps(made))
        else:
            render.print_plan(made)
        return EXIT_OK

    rows, seconds, console = train_with_progress(runs, execution, as_json)
    if as_json:
        print(render.dumps({"runs": render.json_runs(rows, ("train_noise",)), "counts": render.counts(rows)}))
    else:
        from ..report import summarize

        groups, recs = summarize(rows)
        render.print_sweep_summary(console, rows, groups, recs, execution.store, seconds)
    return EXIT_FAILED if any(r["status"] == "failed" for r in rows) else EXIT_OK
