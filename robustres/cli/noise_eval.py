"""robustres noise-eval: the paper's robustness instruments (Fig. 5 and Prop. 2)."""

import sys
from typing import Annotated, Optional

import typer

from ..axes import parse_floats
from ..grid import EXECUTION_KEYS, merge_preset, parse_filters, preset_slots
from ..spec import AXES, EXECUTION_FIELDS, NOISE_KINDS, RUN_OPTIONS, SpecError, meta, modality_of
from . import render
from .app import EXIT_FAILED, EXIT_OK, app, examples
from .common import check_store, execution_of
from .options import AsJson, AxisCommand, axis_flag, execution_options, grid_options, run_options, with_options
from .sweep import run_sweep

# train-noise mode is a sweep over every axis of the table but the one --levels lists; test-noise
# trains nothing: it takes the axes that filter trained runs (noise_eval "both": depth, h) and
# refuses the options only training has.
LEVELS = next(f for f in AXES if f.name == "train_noise")
SWEPT = tuple(f for f in AXES if f is not LEVELS)
TRAINING_ONLY = {**{f.name: meta(f).flag or "--" + f.name.replace("_", "-") for f in RUN_OPTIONS + EXECUTION_FIELDS
                    if meta(f).noise_eval == "train-noise"},
                 **{meta(f).grid: axis_flag(f) for f in SWEPT if meta(f).noise_eval != "both"}}
HELP = ("The paper's robustness instruments: training on noisy inputs (--mode train-noise, Fig. 5), accuracy of "
        "trained runs on corrupted test inputs (--mode test-noise), and how input noise grows through the blocks "
        "(--propagation, Prop. 2).")


@app.command("noise-eval", help=HELP, short_help="Robustness: noisy training (Fig. 5), corrupted test inputs, Prop. 2.",
             cls=AxisCommand,
             epilog=examples("robustres noise-eval --mode train-noise --dataset two-moons --depth 10 --h 0.1,1 "
                             "--levels 0,0.1,0.2 --seeds 3",
                             "robustres noise-eval --depth 10 --levels 0,0.2,0.4 --propagation"))
@with_options(run_options(noise_eval=True), execution_options(noise_eval=True), lead=grid_options(SWEPT))
def noise_eval(
    options: dict,
    mode: Annotated[str, typer.Option(
        metavar="MODE",
        help="train-noise (train on noisy inputs: a sweep over --levels) or test-noise (evaluate trained runs on "
             "corrupted test inputs).")] = "test-noise",
    levels: Annotated[str, typer.Option(
        metavar="LIST", help="Noise levels from 0 to 1, comma-separated.")] = "0,0.1,0.2,0.3",
    kinds: Annotated[Optional[str], typer.Option(
        metavar="LIST", show_default=False,
        help="Noise kinds, comma-separated: gaussian, salt-pepper, mosaic (images), char-swap (text), gaussian "
             "(points). Default: the data's first.")] = None,
    propagation: Annotated[bool, typer.Option(
        "--propagation",
        help="test-noise: also record, per block, ||x_n(noisy) - x_n(clean)|| / ||x_n(clean)||.")] = False,
    depths: Annotated[Optional[str], typer.Option(
        "--depth", "--depths", metavar="LIST", show_default=False, help="Depth(s), comma-separated.")] = None,
    as_json: AsJson = False,
) -> None:
    config = options.pop("config", None)
    if mode not in ("train-noise", "test-noise"):  # first: the other checks depend on the mode
        raise SpecError(f"unknown mode {mode!r}; choose train-noise or test-noise")
    level_list = parse_floats("--levels", levels)
    for level in level_list:
        if not 0 <= level <= 1:
            raise SpecError(f"--levels: a noise level is in [0, 1], got {level:g}")
    kind_list = [k.strip() for k in kinds.split(",")] if kinds else []
    known = sorted({k for ks in NOISE_KINDS.values() for k in ks})
    for kind in kind_list:
        if kind not in known:
            raise SpecError(f"unknown noise kind {kind!r}; choose: {', '.join(known)}")
    if mode == "train-noise":
        if propagation:
            raise SpecError("--propagation goes with --mode test-noise (it reads trained checkpoints)")
        if len(kind_list) > 1:
            raise SpecError("--mode train-noise trains with one noise kind at a time")
        flags = {**options, "depths": depths, meta(LEVELS).grid: level_list,
                 "noise_kind": kind_list[0] if kind_list else None}
        raise typer.Exit(run_sweep(merge_preset(config, flags), config, False, as_json, False))
    for name, flag in TRAINING_ONLY.items():
        if name in options:
            raise SpecError(f"{flag} goes with --mode train-noise (test-noise trains nothing)")
    if options.get("limit_test") is not None and options["limit_test"] < 1:
        raise SpecError(f"--limit-test must be >= 1, got {options['limit_test']}")
    test_noise(options, level_list, kind_list, propagation, config, depths, options.pop("h", None), as_json)


def test_noise(options, levels, kinds, with_propagation, config, depth, h, as_json) -> None:
    preset = merge_preset(config, {}) if config is not None else {}
    # The preset's store and data folder count, as in sweep; the flags given override them.
    execution = execution_of({k: v for k, v in {**preset, **options}.items() if k in EXECUTION_KEYS})
    check_store(execution.store, writes=True)
    planned = None
    if config is not None:
        planned = frozenset(s.run_id for slot in preset_slots(preset, str(config)) for s in slot)
    filters = dict(parse_filters(options.get("dataset"), depth, h, None, depth_flag="--depth"), run_ids=planned)
    check_kinds([(d, None) for d in filters["datasets"] if d != "synthetic"], kinds)  # synthetic: as its runs

    from .. import report as R  # pandas and pyarrow: imported once the input is checked
    from ..store import Store

    store = Store(execution.store, write_cache=False)  # nothing is written before the input is checked
    rows = R.select(store.runs(), R.Filters(**filters))
    rows = rows[rows.status == "completed"]
    if rows.empty:
        print(f"error: no completed runs in {store.root} match", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    check_kinds(zip(rows.dataset, rows.synthetic_like), kinds)  # the store's runs: read without torch

    from ..devices import use_threads  # torch: seconds to import, so only now
    from ..instruments import evaluate_store

    use_threads(execution)
    result = evaluate_store(store, rows, levels, kinds, with_propagation, execution.data_dir,
                            options.get("limit_test"), execution.device)
    if not result.evaluated:
        print(f"error: none of the {len(result.specs)} matching runs has a usable checkpoint",
              file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    from ..noise_stats import summarize

    protocols = dict(zip(rows.run_id, rows.protocol))  # runs of other protocols (lr, ...) are never pooled
    summary = summarize(result.results, store.propagation() if with_propagation else None, protocols)
    if as_json:
        print(render.dumps({"noise_evals": result.results, **summary}))
        raise typer.Exit(EXIT_OK)
    render.print_noise_table(summary, result.evaluated, store.root)
    raise typer.Exit(EXIT_OK)


def check_kinds(datasets, kinds: list[str]) -> None:
    """Every noise kind must apply to every (dataset, like) given: checked before torch is imported,
    from --dataset at once, then from the matching runs."""
    for dataset, like in set(datasets):
        modality = modality_of(dataset, like if isinstance(like, str) else None)
        for kind in kinds:
            if kind not in NOISE_KINDS[modality]:
                raise SpecError(f"noise kind {kind!r} does not apply to {modality} data; "
                                f"choose: {', '.join(NOISE_KINDS[modality])}")
