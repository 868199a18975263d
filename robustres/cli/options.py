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
from typer.core import TyperCommand

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
    axis under its field's flag (train's: --lr 0.05,0.5, --bn on,off; train declares its own --h, ...)."""
    chosen = [_option(f, FIELD_TYPES) for f in RUN_OPTIONS if meta(f).noise_eval or not noise_eval]
    return ([p for f in AXES for p in _axis(f, train=True)] if axes else []) + chosen


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
        lead_kept = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in lead  # before own's
                     if p.name not in {q.name for q in own}]
        names = [p.name for p in lead_kept + added]

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = fold_negated({n: kwargs.pop(n) for n in names if n in kwargs})
            return command(options={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = inspect.Signature(lead_kept + own + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in lead_kept + own + added}
        del wrapper.__wrapped__  # typer must see the new signature, not the command's
        return wrapper

    return decorate


AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress goes to stderr).")]
Force = Annotated[bool, typer.Option("--force", help="Retrain runs that the store already holds.")]
Config = Annotated[Optional[Path], typer.Option(
    "--config", metavar="PRESET", show_default=False,
    help="A sweep preset: a YAML file, or a packaged preset by name (e.g. quick-moons; robustres sweep "
         "--list-presets lists them). Flags override its keys.")]
# The seeds' axis: a count by default (not the one seed a run has), said in its help.
_SEEDS = next(f for f in AXES if meta(f).grid_syntax == "seeds")
SEEDS_HELP = meta(_SEEDS).help[:-1]
Seeds = Annotated[Optional[str], typer.Option(
    "--" + meta(_SEEDS).grid, metavar=meta(_SEEDS).metavar, show_default=False,
    help=f"{SEEDS_HELP}. Default {MIN_SEEDS} (seeds 0..{MIN_SEEDS - 1}): the fewest that report recommends from.")]


def _flags(f) -> dict[bool, tuple[str, str]]:
    """An axis's (parameter name, flag): a sweep's by its grid key (--depths, --h, --seeds, --lr), train's
    (True) by its field's flag (--depth, --lr); for --bn/--no-bn, --bn."""
    m = meta(f)
    return {False: (m.grid, "--" + m.grid.replace("_", "-")),
            True: (f.name, (m.flag or "--" + f.name.replace("_", "-")).split("/")[0])}


def axis_flag(f, *, train: bool = False) -> str:
    return _flags(f)[train][1]


# Boolean axes: --bn (on), --bn on,off (both) and --no-bn (off), a flag of its own that `with_options`
# folds into the axis: {"no_bn": ("bn", "--bn", "--no-bn")}.
NEGATED = {f"no_{name}": (name, flag, "--no-" + flag[2:]) for f in AXES if FIELD_TYPES[f.name] is bool
           for name, flag in set(_flags(f).values())}
SWITCHES = {name for name, _, _ in NEGATED.values()}


def _axis(f, *, train: bool = False) -> list[inspect.Parameter]:
    """A sweep axis as a flag that takes a list as text, parsed by axes.py (see _flags); a boolean
    axis has its --no-x too. Its help says the default only where a sweep has one."""
    m = meta(f)
    name, flag = _flags(f)[train]
    if m.grid_syntax == "seeds" and not train:
        annotation = Seeds
    else:
        words = m.help if m.grid_required and not train else help_text(f)  # train has a default for each
        annotation = Annotated[Optional[str], typer.Option(flag, metavar=m.metavar, show_default=False, help=words)]
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)]
    for neg, (_, positive, flag_off) in NEGATED.items():
        if positive == flag and neg == f"no_{name}":
            off = typer.Option(flag_off, show_default=False, help=f"The same as {positive} off.")
            params.append(inspect.Parameter(neg, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[Optional[bool], off]))
    return params


def grid_options(axes=AXES) -> list[inspect.Parameter]:
    """The grid's options, shared by sweep and search (and noise-eval, with its `axes`): --config,
    then one per sweep axis of the field table (given ones land in `options` under config and the
    axes' grid keys)."""
    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Config)
    return [config] + [p for f in axes for p in _axis(f)]


def fold_negated(given: dict) -> dict:
    """--no-bn given: the axis bn is off (with --bn too: refused, as click would keep the last)."""
    for neg, (name, flag, flag_off) in NEGATED.items():
        if given.pop(neg, None):
            if given.get(name) is not None:
                raise SpecError(f"{flag} and {flag_off} are both given; give one")
            given[name] = "off"
    return given


class AxisCommand(TyperCommand):
    """A command whose boolean axes take a list (--bn on,off) or nothing: a bare --bn is --bn on.
    (Typer's parser has no option with an optional value, so the bare flag gets its word here.)"""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        switches = {opt for p in self.params if p.name in SWITCHES for opt in p.opts}
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out.extend(args[i:])
                break
            out.append(arg)
            if arg in switches and (i + 1 == len(args) or args[i + 1].startswith("-")):
                out.append("on")
        return super().parse_args(ctx, out)


def check_repeats(command, argv: list[str]) -> None:
    """Refuse an option given twice (click would keep the last one without a word)."""
    sub = command.commands.get(argv[0]) if argv else None
    if sub is None:
        return
    owner = {opt: NEGATED.get(p.name, (p.name,))[0] for p in sub.params for opt in (*p.opts, *p.secondary_opts)
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
