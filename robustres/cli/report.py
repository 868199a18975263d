"""robustres report: which h to use at each depth, and how sure; figures and CI gates."""

import sys
from typing import Annotated, Optional

import typer

from ..grid import merge_preset, parse_filters, preset_slots
from ..spec import MIN_SEEDS, SpecError, default_store
from . import render, render_law
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import check_outputs, check_store
from .options import Config, execution_options, with_options
from .paths import STDOUT, page_target, write_failed

FORMATS = ("table", "json", "csv", "markdown")
PREDICT = ("Predict h at these depths (not run), comma-separated: from the fixed rule's law of depth and from the rule "
           "that transfers best; flagged when outside the measured depths.")
HELP = ("Which h to use at each depth, and how sure: tables, JSON, CSV or markdown, the paper's figures, and gates "
        "for CI. Exit codes: 0 fine, 1 a gate failed or no run matched, 2 bad input.")


@app.command(help=HELP, short_help="Which h to use at each depth, and how sure; figures and CI gates.",
             epilog=examples("robustres report --config quick-moons",
                             "robustres report --depths 30 --format json",
                             "robustres report --config ci-smoke --require-complete --max-failures 0",
                             "robustres report --plot figures/"))
@with_options(execution_options(names=("store",)))
def report(
    options: dict,
    config: Config = None,
    dataset: Annotated[Optional[str], typer.Option(
        metavar="LIST", show_default=False, help="Only these datasets, comma-separated.")] = None,
    depths: Annotated[Optional[str], typer.Option(
        metavar="LIST", show_default=False, help="Only these depths, comma-separated.")] = None,
    h: Annotated[Optional[str], typer.Option(
        "--h", metavar="GRID", show_default=False, help="Only these h (a list or a range, as in sweep).")] = None,
    train_noise: Annotated[Optional[str], typer.Option(
        metavar="LIST", show_default=False, help="Only these training-noise levels.")] = None,
    min_seeds: Annotated[Optional[int], typer.Option(
        metavar="N", show_default=False,
        help=f"Completed runs an h needs to be recommended (default {MIN_SEEDS}); given, also a gate: exit 1 "
             "when a (depth, h) has fewer.")] = None,
    max_failures: Annotated[Optional[int], typer.Option(
        metavar="N", show_default=False, help="Gate: exit 1 when more runs than this failed.")] = None,
    require_complete: Annotated[bool, typer.Option(
        "--require-complete", help="Gate: exit 1 unless every run of --config is finished in the store.")] = False,
    format_: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table, json, csv or markdown.")] = "table",
    metric: Annotated[str, typer.Option(
        metavar="METRIC", help="final (accuracy after the last epoch) or best (the best epoch's, as the paper "
                               "reports).")] = "final",
    level: Annotated[float, typer.Option(
        metavar="LEVEL", help="Confidence level of every interval, from 0.5 to 0.999 (0.975: 97.5 %).")] = 0.95,
    plot: Annotated[Optional[str], typer.Option(
        metavar="DIR", show_default=False, help="Write the paper's figures (PNG and SVG) into this folder.")] = None,
    html: Annotated[Optional[str], typer.Option(
        "--html", metavar="FILE", show_default=False,
        help="Write the report as one self-contained HTML page (figures inline, no network); - writes it to "
             "stdout. A symlink is written through; a device or FIFO is refused.")] = None,
    predict_depth: Annotated[Optional[str], typer.Option(metavar="LIST", show_default=False, help=PREDICT)] = None,
) -> None:
    _check(format_, min_seeds, max_failures, require_complete, config, metric, level, html)
    predict = _depths(predict_depth)
    slots = preset_slots(merge_preset(config, {}), str(config)) if config is not None else None
    store_root = check_store(options["store"] if "store" in options else default_store())
    check_outputs(plot, html)
    filters = _filters(dataset, depths, h, train_noise, slots)
    from .. import report as R  # pandas and pyarrow: imported once the input is checked
    from ..store import Store

    store, gates = Store(store_root), R.Gates(min_seeds, max_failures, require_complete)
    try:
        with page_target(html) as page:
            result = R.build(store, R.Filters(**filters), slots, gates, None if config is None else str(config),
                             plot, R.Statistic(metric, level), page, predict)
    except OSError as exc:  # a figure or the page could not be written (the store is read before they are)
        raise write_failed(exc) from None
    if result is None and slots is not None and require_complete:
        print(f"gate failed: 0 of {len(slots)} runs of {config} are in the store (not finished)", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    if result is None:
        print(f"error: no runs in {store.root} match", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    if html != STDOUT:  # with --html -, stdout holds the page alone
        _print(result, format_)
    for failure in result.failures:
        print(f"gate failed: {failure}", file=sys.stderr)
    raise typer.Exit(EXIT_FAILED if result.failures else EXIT_OK)


def _filters(dataset, depths, h, train_noise, slots) -> dict:
    """report.Filters' fields from the options, checked (before pandas is imported)."""
    return dict(**parse_filters(dataset, depths, h, train_noise),
                run_ids=frozenset(s.run_id for slot in slots for s in slot) if slots is not None else None)


def _print(result, format_: str) -> None:
    if format_ == "json":
        base = render.report_json(result.groups, result.recommendations, result.warnings + result.failures,
                                  result.figures, result.edges, result.verdicts)
        print(render.dumps({**base, **render_law.law_json(result)}))
    elif format_ == "csv":
        print(render.report_csv(result.groups), end="")
    elif format_ == "markdown":
        print(render.report_markdown(result.groups, result.recommendations, result.warnings + result.failures,
                                     result.verdicts))
    else:
        render.print_report(result.groups, result.recommendations, result.warnings, result.verdicts)
        render_law.print_law(result)
        for line in result.summaries + [f"wrote {path}" for path in result.figures]:
            print(line)


def _depths(text: str | None) -> tuple[int, ...]:
    """--predict-depth's depths, each > 0 (whether the network takes it is known once the store is read)."""
    if text is None:
        return ()
    try:
        depths = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise SpecError(f"--predict-depth takes whole depths, comma-separated, got {text!r}") from None
    bad = [d for d in depths if d <= 0]
    if bad:
        raise SpecError(f"--predict-depth must be a depth > 0, got {bad[0]}")
    return depths


def _check(format_, min_seeds, max_failures, require_complete, config, metric, level, html) -> None:
    if html == STDOUT and format_ != "table":
        raise SpecError(f"--html - and --format {format_} would both write to stdout; give one")
    if metric not in ("final", "best"):
        raise SpecError(f"unknown metric {metric!r}; choose final or best")
    from ..stats import level_shown_exactly  # (scipy loads at first use, not here)

    if not level_shown_exactly(level):  # the labels ("97.5 % CI") must say the level used
        raise SpecError(f"--level is a confidence level from 0.5 to 0.999 with at most one decimal in percent "
                        f"(e.g. 0.9, 0.95, 0.975, 0.999), got {level:g}")
    if format_ not in FORMATS:
        raise SpecError(f"unknown format {format_!r}; choose one of: {', '.join(FORMATS)}")
    if min_seeds is not None and min_seeds < 1:
        raise SpecError(f"--min-seeds must be >= 1, got {min_seeds}")
    if max_failures is not None and max_failures < 0:
        raise SpecError(f"--max-failures must be >= 0, got {max_failures}")
    if require_complete and config is None:
        raise SpecError("--require-complete needs --config: which runs should be there?")
