"""The commands' options, derived from the field tables in spec.py.

`with_options(fields)` adds one typed Typer option per field to a command: its flag, help text and
metavar come from the field's Meta, every default is None (so "given" means "not None", and a
flag given on the command line overrides a preset's key), and the command receives them all as
one dict, `options`, holding only the options given.
"""

import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..spec import EXECUTION_FIELDS, EXECUTION_TYPES, FIELD_TYPES, MIN_SEEDS, RUN_OPTIONS, meta

# What the flag of a field takes on the command line, where that is not the field's own type.
_CLI_TYPES = {"milestones": str, "precision": str, "pack_size": str, "track_layers": str, "store": str,
              "data_dir": str}  # str: an empty path is refused, not read as "."


def _option(f, types: dict) -> inspect.Parameter:
    m = meta(f)
    py_type = _CLI_TYPES.get(f.name, types[f.name])
    flag = m.flag or "--" + f.name.replace("_", "-")
    info = typer.Option(flag, help=m.help, metavar=None if py_type is bool else m.metavar or None,
                        show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[py_type], info])


def run_options(*, noise_eval: bool = False) -> list[inspect.Parameter]:
    """The shared run options (all of them; or those of `noise-eval --mode train-noise`)."""
    return [_option(f, FIELD_TYPES) for f in RUN_OPTIONS if meta(f).noise_eval or not noise_eval]


def execution_options(*, sweep: bool = False, names: tuple[str, ...] | None = None) -> list[inspect.Parameter]:
    """The execution options: train's, sweep's (with the executors'), or the ones named."""
    chosen = [f for f in EXECUTION_FIELDS if meta(f).option and (sweep or not meta(f).sweep_only)]
    if names is not None:
        chosen = [f for f in EXECUTION_FIELDS if f.name in names]
    return [_option(f, EXECUTION_TYPES) for f in chosen]


def with_options(*groups: list[inspect.Parameter], lead: list[inspect.Parameter] = ()):
    """Add the options of `groups` (and of `lead`, listed first in --help) to a command; it gets
    those given as `options` (a dict)."""
    lead = list(lead)
    added = [p for group in groups for p in group]
    names = [p.name for p in lead + added]

    def decorate(command):
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {n: kwargs.pop(n) for n in names if n in kwargs}
            return command(options={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = inspect.Signature(lead + own + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in lead + own + added}
        del wrapper.__wrapped__  # typer must see the new signature, not the command's
        return wrapper

    return decorate


AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress goes to stderr).")]
Force = Annotated[bool, typer.Option("--force", help="Retrain runs that the store already holds.")]
Config = Annotated[Optional[Path], typer.Option(
    "--config", metavar="PRESET", show_default=False,
    help="A sweep preset: a YAML file, or a packaged preset by name (e.g. quick-moons; robustres sweep "
         "--list-presets lists them). Flags override its keys.")]
_H_HELP = "h values: 0.1,0.5,1 (a list), 0.001..20 (1-2-5 steps per decade) or 0.001..1:7 (7 log-spaced)"
_SEEDS_HELP = "5 (a count: seeds 0..4), 7,8,9 (those) or 3..6 (a range)"
HGrid = Annotated[Optional[str], typer.Option("--h", metavar="GRID", show_default=False, help=_H_HELP + ".")]
Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", show_default=False,
    help=f"{_SEEDS_HELP}. Default {MIN_SEEDS} (seeds 0..{MIN_SEEDS - 1}): the fewest that report recommends from.")]
# train's: the same grammar, train's defaults (one run, h 0.1)
TrainH = Annotated[Optional[str], typer.Option("--h", metavar="GRID", show_default=False,
                                               help=_H_HELP + "; default 0.1.")]
TrainSeeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", show_default=False, help=f"As in sweep: {_SEEDS_HELP}. Default: --seed 0.")]
Depths = Annotated[Optional[str], typer.Option("--depths", metavar="LIST", show_default=False,
                                               help="Depths, comma-separated, e.g. 20,110,218.")]
TrainNoise = Annotated[Optional[str], typer.Option(
    "--train-noise", metavar="LIST", show_default=False,
    help="Training-noise levels, comma-separated, e.g. 0,0.1,0.2 (a search searches each on its own).")]


def grid_options() -> list[inspect.Parameter]:
    """The grid's options, shared by sweep and search: --config, --depths, --h, --seeds, --train-noise
    (given ones land in `options` under config, depths, h, seeds, train_noise)."""
    kinds = {"config": Config, "depths": Depths, "h": HGrid, "seeds": Seeds, "train_noise": TrainNoise}
    return [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=kind)
            for name, kind in kinds.items()]
