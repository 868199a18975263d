"""robustres train: one run per value of --h x --seed (x every other axis given: --lr, --bn, ...),
recorded in the store."""

import itertools
import math
from typing import Annotated, Optional

import typer

from ..axes import axis_values, parse_ints, parse_seed_names, parse_seeds
from ..spec import AXES, FIELD_TYPES, SpecError, default_of, make_run_spec
from . import render
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import execution_of, given_precision, resolve_precisions, train_with_progress
from .options import SEEDS_HELP, AsJson, AxisCommand, Force, axis_flag, execution_options, run_options, with_options

TrainSeeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", show_default=False, help=f"As in sweep: {SEEDS_HELP}. Default: --seed 0.")]

HELP = ("Train runs (one per h x seed, and per value of every other list given: --lr 0.05,0.5, --bn on,off, ...) "
        "and record them in the store. Defaults follow the paper's protocol for the dataset. Runs that differ only "
        "in h, seed, training noise, lr, momentum and weight decay train together as one fused network (a pack); "
        "each is stored as its own run.")


@app.command(help=HELP, short_help="Train runs (one per h x seed) and record them in the store.", cls=AxisCommand,
             epilog=examples("robustres train --dataset two-moons --depth 10 --h 0.1,0.5 --seed 0,1 --epochs 20",
                             "robustres train --dataset cifar10 --depth 110 --h 0.1,1 --lr 0.05,0.1 --dry-run",
                             "robustres train --dataset two-moons --h 0.1 --json | jq .runs"))
@with_options(run_options(axes=True), execution_options())
def train(
    options: dict,
    depth: Annotated[Optional[int], typer.Option(
        metavar="N", show_default=False, help="Depth: 6n+2 (images), 9/17/29/49 (text), blocks (two-moons).")] = None,
    seed: Annotated[Optional[str], typer.Option(
        metavar="LIST", show_default=False,
        help="Seeds by name: 3 is seed 3; 3,4 or 3..6 (default 0: one run per h). --seeds 3 is seeds 0..2.")] = None,
    seeds: TrainSeeds = None,
    train_noise: Annotated[Optional[float], typer.Option(
        metavar="LEVEL", show_default=False,
        help=f"Noise level from 0 to 1 on the training inputs (test data stay clean; default "
             f"{default_of('train_noise'):g}).")] = None,
    force: Force = False,
    as_json: AsJson = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Resolve and print the configuration; train nothing.")] = False,
) -> None:
    if seed is not None and seeds is not None:
        raise SpecError("give --seed (seeds by name) or --seeds (a count, or names), not both")
    seeds = parse_seeds(seeds) if seeds is not None else \
        parse_seed_names("--seed", seed) if seed is not None else [default_of("seed")]
    execution = execution_of(options, force)
    # h and every other axis given (lr, bn, ...): their values, by the sweep's grammar, under train's flags.
    axes = {f.name: axis_values(f, options.pop(f.name), axis_flag(f, train=True), execution.max_runs)
            for f in AXES if f.name in options}
    hs = axes.pop("h", (default_of("h"),))
    count = math.prod(map(len, axes.values())) * len(hs) * len(seeds)
    if count > execution.max_runs:  # counted before a run is made, as sweep counts its grid
        named = ["--h"] + [axis_flag(f, train=True) for f in AXES if f.name in axes] + ["the seeds"]
        raise SpecError(f"{', '.join(named[:-1])} and {named[-1]} make {count:,} runs, more than the "
                        f"{execution.max_runs:,} allowed (--max-runs N allows more)")
    run_values = {k: v for k, v in options.items() if k in FIELD_TYPES}
    if "milestones" in run_values:
        run_values["milestones"] = parse_ints("--milestones", run_values["milestones"], allow_empty=True)
    run_values["precision"] = given_precision(options)
    runs = [make_run_spec(**run_values, **dict(zip(axes, point)), depth=depth, h=hv, seed=sv, train_noise=train_noise)
            for point in itertools.product(*axes.values()) for sv in seeds for hv in hs]
    runs = resolve_precisions(runs, options, execution)
    runs = list({spec.run_id: spec for spec in runs}.values())  # the same config twice is one run

    if dry_run:
        from ..execution.dryrun import describe_runs

        described = describe_runs(runs, execution)
        if as_json:
            print(render.dumps({"runs": described}))
        else:
            render.print_dry_run(described)
        raise typer.Exit(EXIT_OK)

    rows, seconds, console = train_with_progress(runs, execution, as_json)
    if as_json:
        print(render.dumps({"runs": render.json_runs(rows)}))
    else:
        render.print_train_summary(console, rows, execution.store, seconds)
    raise typer.Exit(EXIT_FAILED if any(r["status"] == "failed" for r in rows) else EXIT_OK)
