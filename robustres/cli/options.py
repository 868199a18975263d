"""The commands' options, derived from the field tables in spec.py.

`with_options(fields)` adds one typed Typer option per field to a command: its flag, help text and
metavar come from the field's Meta, every default is None (so "given" means "not None", and a
flag given on the command line overrides a preset's key), and the command receives them all as
one dict, `options`, holding only the options given.
"""

import functools
import inspect
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SpecError
from ..spec import (
    AXES,
    EXECUTION_FIELDS,
    EXECUTION_TYPES,
    FAMILIES,
    FIELD_TYPES,
    MIN_SEEDS,
    RUN_OPTIONS,
    ByFamily,
    Said,
    meta,
)


def shown_default(value) -> str:
    """A default as --help writes it: 0.1, 10,000, on/off, 40,60, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def help_text(f) -> str:
    """A field's help with its default, from the table: '(default 0.9)', '(default by dataset: cifar10
    80, ag-news 15, two-moons 30)', '(default: a rule, in words)'; nothing for a default of None,
    False or nothing."""
    m, default = meta(f), meta(f).default
    if isinstance(default, ByFamily):
        said = "default by dataset: " + ", ".join(f"{family.reference} {shown_default(default.of(family, f.name))}"
                                                   for family in FAMILIES.values())
    elif isinstance(default, Said):
        said = f"default: {default.words}"
    else:
        value = f.default if default is None else default
        if value is MISSING or value is None or value is False or value == ():
            return m.help
        said = f"default {shown_default(value)}"
    return f"{m.help[:-1]} ({said})." if m.help.endswith(".") else f"{m.help} ({said})"




def _option(f, types: dict) -> inspect.Parameter:
    m = meta(f)
    py_type = m.cli_type or types[f.name]  # cli_type: a list or a path is text here (an empty path is refused)
    flag = m.flag or "--" + f.name.replace("_", "-")
    info = typer.Option(flag, help=help_text(f), metavar=None if py_type is bool else m.metavar or None,
                        show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[py_type], info])


def run_options(*, noise_eval: bool = False, axes: bool = False) -> list[inspect.Parameter]:
    """The shared run options (all of them; or those of `noise-eval`); with `axes`, also each sweep
    axis as a one-value option (train's, where the command does not declare its own)."""
    chosen = RUN_OPTIONS + (AXES if axes else ())
    return [_option(f, FIELD_TYPES) for f in chosen if meta(f).noise_eval or not noise_eval]


def execution_options(*, sweep: bool = False, noise_eval: bool = False,
                      names: tuple[str, ...] | None = None) -> list[inspect.Parameter]:
    """The execution options: train's, sweep's (with the executors'), noise-eval's, or the ones named."""
    chosen = [f for f in EXECUTION_FIELDS if meta(f).option and (sweep or not meta(f).sweep_only)
              and (meta(f).noise_eval or not noise_eval) and (names is None or f.name in names)]
    return [_option(f, EXECUTION_TYPES) for f in chosen]


def with_options(*groups: list[inspect.Parameter], lead: list[inspect.Parameter] = ()):
    """Add the options of `groups` (and of `lead`, listed first in --help) to a command; it gets
    those given as `options` (a dict)."""
    lead = list(lead)

    def decorate(command):
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]
        # A command's own parameter replaces the derived option of that name (train's --h is a grid).
        added = [p for group in groups for p in group if p.name not in {q.name for q in own}]
        names = [p.name for p in lead + added]

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
_H_HELP = meta(next(f for f in AXES if f.name == "h")).help[:-1]
_SEEDS_HELP = meta(next(f for f in AXES if f.name == "seed")).help[:-1]
HGrid = Annotated[Optional[str], typer.Option("--h", metavar="GRID", show_default=False, help=_H_HELP + ".")]
Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", show_default=False,
    help=f"{_SEEDS_HELP}. Default {MIN_SEEDS} (seeds 0..{MIN_SEEDS - 1}): the fewest that report recommends from.")]
# train's: the same grammar, train's defaults (one run, h 0.1)
TrainH = Annotated[Optional[str], typer.Option("--h", metavar="GRID", show_default=False,
                                               help=help_text(next(f for f in AXES if f.name == "h")))]
TrainSeeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", show_default=False, help=f"As in sweep: {_SEEDS_HELP}. Default: --seed 0.")]


def _axis(f) -> inspect.Parameter:
    """A sweep axis as a flag named by its grid key (--depths, --h, --seeds, --train-noise): a list of
    values as text, parsed by grid.py. Its help says the default only where a sweep has one."""
    m = meta(f)
    if m.grid_syntax == "seeds":
        annotation = Seeds  # a count by default, not the one seed a run has
    else:
        words = m.help if m.grid_required else help_text(f)
        annotation = Annotated[Optional[str], typer.Option("--" + m.grid.replace("_", "-"), metavar=m.metavar,
                                                           show_default=False, help=words)]
    return inspect.Parameter(m.grid, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation)


def grid_options() -> list[inspect.Parameter]:
    """The grid's options, shared by sweep and search: --config, then one per sweep axis of the field
    table (given ones land in `options` under config and the axes' grid keys)."""
    config = inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Config)
    return [config] + [_axis(f) for f in AXES]


def check_repeats(command, argv: list[str]) -> None:
    """Refuse an option given twice (click would keep the last one without a word)."""
    sub = command.commands.get(argv[0]) if argv else None
    if sub is None:
        return
    owner = {opt: p.name for p in sub.params for opt in (*p.opts, *p.secondary_opts)
             if not getattr(p, "multiple", False)}
    seen: dict[str, str] = {}
    for arg in argv[1:]:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        name = owner.get(flag)
        if name is None:
            continue
        if name in seen:
            raise SpecError(f"{flag} is given twice; give it once (lists are comma-separated: --h 0.1,0.5)"
                            if seen[name] == flag else f"{seen[name]} and {flag} are both given; give one")
        seen[name] = flag
