"""robustres search: the h answer per depth by successive halving over h, at a fraction of the grid's cost."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..grid import SEARCH_KEY, merge_preset, sweep_runs
from ..spec import SpecError
from . import render, render_search
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import execution_of, given_precision, resolve_precisions, train_quietly
from .options import AsJson, AxisCommand, execution_options, grid_options, run_options, with_options

HELP = ("Find the h to use at each depth without training the whole grid: start from every other h of the grid, "
        "compare them seed by seed at rungs of the schedule, cut only those that diverged or are worse with "
        "stated confidence, refine around the best, and stay within a budget of the grid's model-epochs. Prints "
        "report's recommendation per depth, the cost against the grid's and every decision. Everything lives in "
        "the store: the same command resumes a killed search with the same decisions.")


def _option(help_text: str, metavar: str):
    return typer.Option(metavar=metavar, show_default=False, help=help_text)


@app.command(help=HELP, short_help="Find h per depth at a fraction of the grid's cost (successive halving).",
             cls=AxisCommand,
             epilog=examples("robustres search --dataset two-moons --depths 10,30 --h 0.01..2 --seeds 5",
                             "robustres search --config fig6-cifar10 --budget 0.25",
                             "robustres search --config fig6-cifar10 --transfer --dry-run",
                             "robustres search --dataset two-moons --depths 30 --h 0.001..10 --seeds 5 --json"))
@with_options(run_options(), execution_options(sweep=True), lead=grid_options())
def search(
    options: dict,
    budget: Annotated[Optional[str], _option(
        "At most this share of the full grid's model-epochs (0.3: 30 %, the default), or, above 1, this many "
        "model-epochs, or this many training FLOPs: a number, an optional prefix k, M, G, T, P or E, and 'flop' "
        "(2e15flop, 500Tflop), shared between the depths by what their grids cost.", "B")] = None,
    rungs: Annotated[Optional[str], _option(
        "Epochs where h values are compared, e.g. 4,8,20 (default: 1/8, 1/4 and 1/2 of the schedule, the epoch "
        "before each lr drop, and the end).", "LIST")] = None,
    stride: Annotated[Optional[str], _option("Start with every N-th h of the grid (default 2).", "N")] = None,
    margin: Annotated[Optional[str], _option(
        "Cut an h only if worse than the rung's leader by more than this accuracy, with confidence "
        "(default 0.02: two points, against late bloomers).", "ACC")] = None,
    keep: Annotated[Optional[str], _option(
        "Always keep at least this share of the starting h values (and 2) alive (default 0.25).", "SHARE")] = None,
    transfer: Annotated[bool, typer.Option(
        "--transfer", help="Search the shallowest depth (--anchors 2: the two shallowest) whole; start each deeper one "
        "from a band of h around what the shallower ones predict (their law of depth), widened when its best lands on "
        "an edge.")] = False,
    anchors: Annotated[Optional[str], _option("With --transfer: the shallowest depths searched whole, 1 or 2 "
                                              "(default 1).", "N")] = None,
    widen: Annotated[Optional[str], _option(
        "With --transfer: widen the predicted interval by this factor on h at each end (default 1.5).", "F")] = None,
    early_seeds: Annotated[Optional[str], _option(
        "Compare h values at the rungs on their first N seeds only (the same seeds for every h); an h that reaches the "
        "end gets the other seeds, to the end, before it is answered (default: all seeds).", "N")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan per depth and its projected cost; train and write nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    config = options.pop("config", None)
    values = merge_preset(config, options)
    given = {"budget": budget, "rungs": rungs, "stride": stride, "margin": margin, "keep": keep,
             "transfer": transfer or None, "anchors": anchors, "widen": widen, "early_seeds": early_seeds}
    from ..halving import FLOP, check_budget, make_options

    search_options = make_options({**values.pop(SEARCH_KEY, {}), **{k: v for k, v in given.items() if v is not None}})
    execution = execution_of(values)
    runs = sweep_runs(values, str(config) if config is not None else "flags", given_precision(values))
    if len({spec.dataset for spec in runs}) > 1:
        raise SpecError("search takes one dataset")

    from .. import search as S

    # A budget too small is bad input, refused before training starts (a FLOP budget needs the
    # engine's count of each depth's FLOPs, which builds its model once).
    check_budget(runs, search_options, S.block_flops(runs) if search_options.budget_unit == FLOP else None)
    if dry_run:
        from ..search_plan import plan

        projected = plan(runs, search_options, execution)
        print(render.dumps(projected)) if as_json else render_search.print_search_plan(projected)
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(_run(resolve_precisions(runs, values, execution), search_options, execution, as_json))


def _run(runs, search_options, execution, as_json: bool) -> int:
    """Train the search round by round, its decisions shown as they are made; then its answer."""
    from .. import search as S

    out = render.console()
    live = sys.stdout.isatty() and not as_json

    def on_round(decisions: list[dict]) -> None:
        if as_json:
            render_search.print_decision_lines(decisions, sys.stderr)
        elif live:
            render_search.print_rung_tables(out, decisions)
        else:
            render_search.print_decision_lines(decisions, sys.stdout)

    try:
        result = S.run_search(runs, search_options, execution, lambda specs, ex: train_quietly(specs, ex, as_json),
                              on_round)
    except S.SearchFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        print(render.dumps(render_search.search_json(result)))
    else:
        render_search.print_search(out, result, Path(execution.store))
    return EXIT_OK
