"""Grids of runs: list syntax, sweep presets (YAML) and the runs a sweep names.

A preset's keys and their types come from spec.py's field tables: the axes and every option.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .datasets import DATASETS
from .spec import (
    AXES,
    EXECUTION_OPTIONS,
    EXECUTION_TYPES,
    FIELD_TYPES,
    GRID_FIELDS,
    MAX_DEPTH,
    MAX_RUNS,
    MAX_SEED,
    MIN_SEEDS,
    PRECISIONS,
    RUN_OPTIONS,
    RunSpec,
    SpecError,
    checked_count,
    make_execution,
    make_run_spec,
    meta,
    shown,
)

GRID_KEYS = tuple(GRID_FIELDS)
RUN_KEYS = tuple(f.name for f in RUN_OPTIONS)
EXECUTION_KEYS = tuple(f.name for f in EXECUTION_OPTIONS)
SWEEP_KEYS = GRID_KEYS + RUN_KEYS + EXECUTION_KEYS
SEARCH_KEY = "search"  # a preset's mapping of `robustres search` options (sweep ignores it)


def _key_type(f, types: dict) -> type | None:
    """The type a YAML value of this option must have: the field's; text for a path and for an
    execution list (track_layers, as on the command line); None where a parser checks it (a run
    option's list, a number or a word such as pack_size's N|auto)."""
    kind, text = types[f.name], meta(f).cli_type
    if kind is Path or (kind is tuple and f in EXECUTION_OPTIONS):
        return str
    return None if kind is tuple or (text is not None and text is not kind) else kind


KEY_TYPES = {f.name: _key_type(f, types) for options, types in ((RUN_OPTIONS, FIELD_TYPES),
                                                                 (EXECUTION_OPTIONS, EXECUTION_TYPES)) for f in options}
# The keys that take a YAML list: the grid axes, and the run or execution options that are tuples.
LIST_KEYS = GRID_KEYS + tuple(k for k in RUN_KEYS if FIELD_TYPES[k] is tuple) + tuple(
    k for k in EXECUTION_KEYS if EXECUTION_TYPES[k] is tuple)


# ---------------------------------------------------------------------------------------------
# Parsing of list-valued options
# ---------------------------------------------------------------------------------------------
def parse_floats(name: str, text: str) -> list[float]:
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise SpecError(f"{name} must be a comma-separated list of numbers, got {text!r}")
    out = []
    for t in items:
        try:
            out.append(float(t))
        except ValueError:
            raise SpecError(f"{name}: {t!r} is not a number") from None
        if out[-1] == 0 and any(c in "123456789" for c in t.lower().split("e")[0]):
            raise SpecError(f"{name}: {t!r} is too small for a float (it would be 0); write 0 for zero")
    return out


def parse_ints(name: str, text: str, *, allow_empty: bool = False) -> list[int]:
    text = str(text).strip()
    if allow_empty and text in ("", "none"):
        return []
    items = [t.strip() for t in text.split(",")]
    out = []
    for t in items:
        try:
            out.append(int(t))
        except ValueError:
            raise SpecError(f"{name}: {t!r} is not a whole number") from None
    return out


def parse_filters(dataset: str | None, depths: str | None, h: str | None, train_noise: str | None,
                  depth_flag: str = "--depths") -> dict:
    """report's and noise-eval's filters (report.Filters' fields). A value no run can ever have (an
    unknown dataset, a depth < 1, a noise level outside [0, 1]) is bad input, not "no runs match"."""
    datasets = tuple(x.strip() for x in dataset.split(",")) if dataset else ()
    for name in datasets:
        if name not in DATASETS:
            raise SpecError(f"--dataset: unknown dataset {shown(name)}; choose among: {', '.join(DATASETS)}")
    depth_list = tuple(parse_ints(depth_flag, depths)) if depths else ()
    for depth in depth_list:
        if not 1 <= depth <= MAX_DEPTH:
            raise SpecError(f"{depth_flag}: {depth} is no run's depth (depths are 1 to {MAX_DEPTH:,})")
    noises = tuple(parse_floats("--train-noise", train_noise)) if train_noise else ()
    for level in noises:
        if not 0 <= level <= 1:
            raise SpecError(f"--train-noise: {level:g} is no run's level (training noise is in [0, 1])")
    return dict(datasets=datasets, depths=depth_list, hs=tuple(parse_h_grid(h)) if h else (), train_noises=noises)


# ---------------------------------------------------------------------------------------------
# Sweeps: grids of depth x h x seed x training noise, from flags and/or a YAML file
# ---------------------------------------------------------------------------------------------


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{name}: {text!r} is not finite")
    return value


def decade_grid(a: float, b: float) -> list[float]:
    """The 1-2-5 values of every decade from a to b, with a and b themselves always included."""
    values = {a, b}
    for exponent in range(math.floor(math.log10(a)) - 1, math.ceil(math.log10(b)) + 1):
        for mantissa in (1, 2, 5):
            v = float(f"{mantissa}e{exponent}")  # exact decimal, no 0.30000000000000004
            if a <= v <= b:
                values.add(v)
    return sorted(values)


def log_grid(a: float, b: float, n: int) -> list[float]:
    """n log-spaced points from a to b inclusive, rounded to 4 significant digits (ends exact), or to
    as many more (up to 12) as keep the n points distinct."""
    for digits in range(4, 13):
        inner = [float(f"{a * (b / a) ** (i / (n - 1)):.{digits}g}") for i in range(1, n - 1)]
        values = [a, *inner, b]
        if len(set(values)) == n:
            break
    return values


def parse_h_grid(text: str, name: str = "--h", limit: int = MAX_RUNS) -> list[float]:
    """'0.1,0.5,1' (a list), 'A..B' (the decade grid of 1-2-5 steps) or 'A..B:N' (N log-spaced)."""
    text = str(text).strip()
    if ".." not in text:
        values = parse_floats(name, text)
    else:
        bounds, colon, count = text.partition(":")
        lo, _, hi = bounds.partition("..")
        if lo.endswith(".") or hi.startswith(".") or ".." in hi:
            raise SpecError(f"{name}: {shown(text)} is not a range; write A..B or A..B:N (two dots)")
        if colon and not count.strip():
            raise SpecError(f"{name}: nothing after ':' in {shown(text)}; write A..B:N, N the number of points")
        a, b = _number(name, lo.strip()), _number(name, hi.strip())
        if a <= 0 or b <= 0:
            raise SpecError(f"{name}: a range needs A and B > 0 (a log grid), got {text!r}")
        if a >= b:
            raise SpecError(f"{name}: range {text!r} is empty or reversed; write A..B with A < B")
        if count:
            try:
                n = int(count)
            except ValueError:
                raise SpecError(f"{name}: {count!r} after ':' is not a whole number") from None
            if n < 2:
                raise SpecError(f"{name}: a range needs at least 2 points, got {n}")
            if n > limit:
                raise SpecError(f"{name}: {n:,} points is more than a grid may hold ({limit:,} runs; --max-runs N "
                                "allows more)")
            values = log_grid(a, b, n)
            if len(set(values)) < n:
                print(f"warning: {name} {text}: {n - len(set(values)):,} of the {n:,} points coincide at 12 "
                      f"significant digits and merge; the grid has {len(set(values)):,}", file=sys.stderr)
        else:
            values = decade_grid(a, b)
    for v in values:
        if not math.isfinite(v):
            raise SpecError(f"{name}: h must be finite, got {v:g}")
        if v < 0:
            raise SpecError(f"{name}: h must be >= 0, got {v:g}")
    return list(dict.fromkeys(values))


def _too_many(count: int, limit: int, name: str = "--seeds") -> None:
    if count > limit:
        raise SpecError(f"{name}: {count:,} seeds is more than a grid may hold ({limit:,} runs; --max-runs N "
                        "allows more)")


def parse_seeds(value, limit: int | None = None, name: str = "--seeds") -> list[int]:
    """5 -> seeds 0..4; '7,8,9' -> those; '3..6' -> 3, 4, 5, 6. More than `limit` seeds are refused
    before any is listed (default: MAX_RUNS)."""
    limit = MAX_RUNS if limit is None else limit
    if isinstance(value, bool):
        raise SpecError(f"{name}: {value!r} is not a count or a list of seeds")
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"{name}: a count of seeds must be >= 1, got {value}")
        _too_many(value, limit, name)
        return list(range(value))
    if isinstance(value, (list, tuple)):
        _too_many(len(value), limit, name)
        return list(dict.fromkeys(checked_count("seed", whole("seeds", v), minimum=0, maximum=MAX_SEED) for v in value))
    text = str(value).strip()
    if ".." in text:
        lo, _, hi = text.partition("..")
        a, b = parse_ints(name, lo)[0], parse_ints(name, hi)[0]
        if a < 0 or b < a:
            raise SpecError(f"{name}: range {shown(text)} is empty or negative")
        _too_many(b - a + 1, limit, name)
        checked_count("seed", b, minimum=0, maximum=MAX_SEED)
        return list(range(a, b + 1))
    items = parse_ints(name, text)
    if len(items) == 1 and "," not in text:
        return parse_seeds(items[0], limit, name)
    _too_many(len(items), limit, name)
    for s in items:
        checked_count("seed", s, minimum=0, maximum=MAX_SEED)
    return list(dict.fromkeys(items))


def parse_seed_names(name: str, text: str) -> list[int]:
    """`train --seed`: seeds by name, never a count: '3' is seed 3; '3,4' and '3..6' as in --seeds."""
    text = str(text).strip()
    if "," in text or ".." in text:
        return parse_seeds(text, name=name)
    seed = parse_ints(name, text)[0]
    return [checked_count("seed", seed, minimum=0, maximum=MAX_SEED)]


def whole(name: str, value) -> int:
    """A YAML list item that must be a whole number: an int or a numeric string, never 3.7 or true."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}: {shown(value)} is not a whole number")
    return value


def real(name: str, value) -> float:
    """A YAML list item that must be a number: an int, a float or a numeric string such as '1e-3'."""
    if isinstance(value, str):
        return _number(name, value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name}: {shown(value)} is not a number")
    return float(value)


# The axes nest in field order, but h (the study's axis) and the seed (its repeats) innermost: runs
# that differ only there follow each other, and one spec per point is made and copied per seed.
NESTING = tuple(f.name for f in sorted(AXES, key=lambda f: (f.name == "seed", f.name == "h")))


@dataclass(frozen=True)
class SweepSpec:
    axes: tuple[tuple[str, tuple], ...]  # (field, its values) per sweep axis, in NESTING order
    run_options: tuple[tuple[str, object], ...]  # make_run_spec keywords shared by every run
    source: str = "flags"

    def values(self, name: str) -> tuple:
        return dict(self.axes)[name]

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, depth-major; each validated like a `train` run (the seeds are
        checked once, by parse_seeds, so one spec per point is made and copied per seed)."""
        options, axes = dict(self.run_options), dict(self.axes)
        seeds = axes.pop("seed")
        return [spec.with_(seed=s) for point in itertools.product(*axes.values())
                for spec in [make_run_spec(**dict(zip(axes, point)), seed=seeds[0], **options)] for s in seeds]


def _unique_key_loader():
    """PyYAML's safe loader, refusing a key given twice (PyYAML would keep the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                norm = str(key).replace("-", "_")
                if norm in seen:
                    line = key_node.start_mark.line + 1
                    also = f" as {shown(seen[norm])}" if seen[norm] != key else ""
                    raise SpecError(f"key {shown(key)} is given twice (line {line}, and before{also})")
                seen[norm] = key
            return super().construct_mapping(node, deep=deep)

    return Loader


# The presets shipped with the package (the repository's sweeps/ is a link to this folder).
PRESETS = Path(__file__).resolve().parent / "presets"


def find_preset(path) -> Path:
    """A --config value as a file: an existing path as given; else a bare name (`fig6-cifar10` or
    `quick-moons.yaml`) found among the packaged presets; else the path as given (not there)."""
    path = Path(path)
    if os.path.exists(path) or len(path.parts) != 1:  # (False where it cannot be looked at: read, it says why)
        return path
    for candidate in (PRESETS / path.name, PRESETS / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    return path


def list_presets() -> list[tuple[str, str]]:
    """(name, description) of every packaged preset, by name."""
    out = []
    for path in sorted(PRESETS.glob("*.yaml")):
        description = (_read_yaml(path) or {}).get("description") or ""
        out.append((path.stem, " ".join(str(description).split())))
    return out


def _read_yaml(path: Path):
    import yaml

    try:
        if path.is_dir():
            raise SpecError(f"sweep config {path} is a folder, not a YAML file")
        if not path.is_file():
            raise SpecError(f"sweep config {path} does not exist (robustres sweep --list-presets lists the presets)")
        raw = path.read_bytes()
    except OSError as exc:  # permission denied, a name too long
        raise SpecError(f"sweep config {path}: cannot read {exc.filename or path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path}: not a UTF-8 text file (byte {raw[exc.start]:#04x} on line {line})") from None
    try:
        return yaml.load(text, Loader=_unique_key_loader())
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise SpecError(f"{path}: not valid YAML{line}") from None


def _typed(path: Path, key, value, expected: type):
    """A YAML value of a scalar key, as its type; numeric strings ('1e-3', which YAML 1.1 reads as a
    string) count as numbers."""
    if expected in (int, float) and isinstance(value, str):
        try:
            return whole(key, value) if expected is int else real(key, value)
        except SpecError:
            pass
    ok = isinstance(value, expected) and not (expected in (int, float) and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise SpecError(f"{path}: key {shown(key)} must be {expected.__name__}, got {shown(value)}")
    return value


def load_sweep_file(path: Path) -> dict:
    """A sweep preset (a path or a packaged preset's name): a YAML mapping of SWEEP_KEYS. Unknown keys
    and bad values name the key and file."""
    path = find_preset(path)
    values = _read_yaml(path)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SpecError(f"{path}: must be a mapping of keys to values, got {type(values).__name__}")
    out = {}
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm == SEARCH_KEY:
            out[norm] = _search_section(path, value)
            continue
        if norm not in SWEEP_KEYS and norm != "description":
            raise SpecError(f"{path}: unknown key {shown(key)}; known keys: {', '.join(SWEEP_KEYS)}")
        if isinstance(value, dict):
            raise SpecError(f"{path}: key {shown(key)} takes a value or a list, not a mapping ({shown(value)})")
        if isinstance(value, list) and norm not in LIST_KEYS + ("description",):
            raise SpecError(f"{path}: key {shown(key)} takes one value, not a list ({shown(value)})")
        expected = KEY_TYPES.get(norm)
        out[norm] = value if expected is None or value is None else _typed(path, key, value, expected)
    out.pop("description", None)
    return out


def _search_section(path: Path, value) -> dict:
    """A preset's `search:` mapping (robustres search's options, see halving.py), checked here."""
    from .halving import make_options

    if not isinstance(value, dict):
        raise SpecError(f"{path}: key 'search' takes a mapping of search options, got {shown(value)}")
    section = {str(k).replace("-", "_"): v for k, v in value.items()}
    try:
        make_options(section)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return section


def _items(name: str, value, item, parse) -> list:
    """A grid axis: a YAML list (each item checked by `item`) or a string for `parse`."""
    if isinstance(value, (list, tuple)):
        return [item(name, v) for v in value]
    return parse(name, str(value))


def _axis_values(f, values: dict, max_runs: int) -> tuple:
    """One axis's distinct values from merged sweep values, by its syntax (Meta.grid_syntax): a list
    of the field's type, h's ranges too, or seeds (a count too); not given, its default."""
    m, key = meta(f), meta(f).grid
    given = values.get(key)
    if given is None and m.grid_required:
        noun = f"{key} grid" if m.grid_syntax == "range" else key
        raise SpecError(f"no {noun} given (--{key.replace('_', '-')} {m.metavar} or '{key}:' in the config)")
    if m.grid_syntax == "seeds":
        return tuple(parse_seeds(MIN_SEEDS if given is None else given, max_runs))  # the fewest report answers from
    if given is None:
        return (None,)  # one value: make_run_spec's default
    if m.grid_syntax == "range":
        listed = _items(key, given, real, lambda _name, text: parse_h_grid(text, limit=max_runs))
    elif FIELD_TYPES[f.name] is int:
        listed = _items(key, given, whole, parse_ints)
    else:
        listed = _items(key, given, real, parse_floats)
    return tuple(dict.fromkeys(listed))


def make_sweep_spec(values: dict, source: str = "flags", max_runs: int = MAX_RUNS) -> SweepSpec:
    """Resolve merged sweep values (file, then flags) into a validated SweepSpec of at most
    `max_runs` runs, counted before any run is made."""
    unknown = set(values) - set(SWEEP_KEYS)
    if unknown:
        raise SpecError(f"{source}: unknown key {shown(sorted(unknown)[0])}")
    by_name = {f.name: f for f in AXES}
    try:
        axes = tuple((name, _axis_values(by_name[name], values, max_runs)) for name in NESTING)
        options = {k: values[k] for k in RUN_KEYS if values.get(k) is not None}
        if "milestones" in options:
            options["milestones"] = tuple(_items("milestones", options["milestones"], whole,
                                                 lambda name, text: parse_ints(name, text, allow_empty=True)))
        spec = SweepSpec(axes, tuple(sorted(options.items())), source)
        if any(not listed for _, listed in axes):
            raise SpecError("the grid is empty")
        count = math.prod(len(listed) for _, listed in axes)
        if count > max_runs:
            raise SpecError(f"the grid has {count:,} runs, more than the {max_runs:,} allowed (--max-runs N "
                            "allows more)")
        spec.runs()  # validate every run now, before anything is written
    except SpecError as exc:
        if source != "flags" and not str(exc).startswith(source):
            raise SpecError(f"{source}: {exc}") from None
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(f"{source}: {shown(str(exc))}") from None
    return spec


# ---------------------------------------------------------------------------------------------
# Presets and flags together: the runs a sweep names
# ---------------------------------------------------------------------------------------------


def merge_preset(path: Path | None, flags: dict) -> dict:
    """A preset's values (validated, its execution keys too, naming the file), then the flags given."""
    path = find_preset(path) if path is not None else None
    file_values = load_sweep_file(path) if path is not None else {}
    if path is not None:
        try:
            make_execution({k: file_values[k] for k in EXECUTION_KEYS if k in file_values})
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None
    return {**file_values, **{k: v for k, v in flags.items() if v is not None}}


def sweep_runs(values: dict, source: str, precision: str) -> list[RunSpec]:
    """The distinct runs of merged sweep values, with `precision` already resolved (fp32 or bf16)."""
    grid = {k: v for k, v in values.items() if k not in EXECUTION_KEYS and k != SEARCH_KEY}
    if isinstance(grid.get("seeds"), str) and grid["seeds"].isdigit():
        grid["seeds"] = int(grid["seeds"])
    max_runs = values.get("max_runs") or MAX_RUNS
    runs = make_sweep_spec({**grid, "precision": precision}, source, max_runs).runs()
    return list({spec.run_id: spec for spec in runs}.values())


def preset_slots(values: dict, source: str) -> list[tuple[RunSpec, ...]]:
    """The runs a preset names on any machine, one slot per grid point.

    A preset that leaves precision to `auto` ran as bf16 on a GPU and as fp32 on a CPU; each of its
    grid points may be either, so a slot holds one run per precision and is filled by any of them.
    """
    given = values.get("precision")
    choices = PRECISIONS if given in (None, "auto") else (given,)
    per_precision = [sweep_runs(values, source, p) for p in choices]
    return list(zip(*per_precision))
