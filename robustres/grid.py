"""Grids of runs: list syntax, sweep presets (YAML) and the runs a sweep names.

The keys a preset may hold, and their types, come from the field tables in spec.py: the grid axes
(`depths`, `h`, `seeds`, `train_noise`), every shared run option and every execution option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .spec import (
    EXECUTION_OPTIONS,
    EXECUTION_TYPES,
    FIELD_TYPES,
    GRID_FIELDS,
    PRECISIONS,
    RUN_OPTIONS,
    RunSpec,
    SpecError,
    _count,
    make_execution,
    make_run_spec,
)

GRID_KEYS = tuple(GRID_FIELDS)
RUN_KEYS = tuple(f.name for f in RUN_OPTIONS)
EXECUTION_KEYS = tuple(f.name for f in EXECUTION_OPTIONS)
SWEEP_KEYS = GRID_KEYS + RUN_KEYS + EXECUTION_KEYS
# The type a YAML value must have, per key (lists and range strings are checked by the parsers).
KEY_TYPES = {**{k: FIELD_TYPES[k] for k in RUN_KEYS if FIELD_TYPES[k] is not tuple},
             **{k: EXECUTION_TYPES[k] for k in EXECUTION_KEYS if EXECUTION_TYPES[k] is not tuple}}
KEY_TYPES.update(precision=str, store=str, data_dir=str, track_layers=str)
KEY_TYPES.pop("pack_size")  # a number or "auto"


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
    """n log-spaced points from a to b inclusive, rounded to 4 significant digits (ends exact)."""
    inner = [float(f"{a * (b / a) ** (i / (n - 1)):.4g}") for i in range(1, n - 1)]
    return [a, *inner, b]


def parse_h_grid(text: str, name: str = "--h") -> list[float]:
    """'0.1,0.5,1' (a list), 'A..B' (the decade grid of 1-2-5 steps) or 'A..B:N' (N log-spaced)."""
    text = str(text).strip()
    if ".." not in text:
        values = parse_floats(name, text)
    else:
        bounds, _, count = text.partition(":")
        lo, _, hi = bounds.partition("..")
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
            values = log_grid(a, b, n)
        else:
            values = decade_grid(a, b)
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise SpecError(f"{name}: h must be finite and >= 0, got {v:g}")
    return list(dict.fromkeys(values))


def parse_seeds(value) -> list[int]:
    """5 -> seeds 0..4; '7,8,9' -> those; '3..6' -> 3, 4, 5, 6."""
    if isinstance(value, bool):
        raise SpecError(f"--seeds: {value!r} is not a count or a list of seeds")
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"--seeds: a count of seeds must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, (list, tuple)):
        return list(dict.fromkeys(_count("seed", int(v) if str(v).lstrip("-").isdigit() else v, minimum=0)
                                  for v in value))
    text = str(value).strip()
    if ".." in text:
        lo, _, hi = text.partition("..")
        a, b = parse_ints("--seeds", lo)[0], parse_ints("--seeds", hi)[0]
        if a < 0 or b < a:
            raise SpecError(f"--seeds: range {text!r} is empty or negative")
        return list(range(a, b + 1))
    items = parse_ints("--seeds", text)
    if len(items) == 1 and "," not in text:
        return parse_seeds(items[0])
    for s in items:
        _count("seed", s, minimum=0)
    return list(dict.fromkeys(items))


def _as_list(name: str, value, parse) -> list:
    if isinstance(value, (list, tuple)):
        return [parse(name, str(v)) for v in value]
    return parse(name, str(value))


@dataclass(frozen=True)
class SweepSpec:
    depths: tuple[int, ...]
    hs: tuple[float, ...]
    seeds: tuple[int, ...]
    train_noises: tuple[float, ...]
    run_options: tuple[tuple[str, object], ...]  # make_run_spec keywords shared by every run
    source: str = "flags"

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, depth-major; each validated like a `train` run."""
        options = dict(self.run_options)
        return [make_run_spec(depth=d, h=h, seed=s, train_noise=noise, **options)
                for d in self.depths for noise in self.train_noises for h in self.hs for s in self.seeds]


def load_sweep_file(path: Path) -> dict:
    """A sweep preset: a YAML mapping of SWEEP_KEYS. Unknown keys and bad values name the key and file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep config {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise SpecError(f"{path}: not valid YAML{line}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SpecError(f"{path}: must be a mapping of keys to values, got {type(values).__name__}")
    out = {}
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm not in SWEEP_KEYS and norm != "description":
            raise SpecError(f"{path}: unknown key {key!r}; known keys: {', '.join(SWEEP_KEYS)}")
        expected = KEY_TYPES.get(norm)
        if expected is not None and value is not None:
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise SpecError(f"{path}: key {key!r} must be {expected.__name__}, got {value!r}")
        out[norm] = value
    out.pop("description", None)
    return out


def make_sweep_spec(values: dict, source: str = "flags") -> SweepSpec:
    """Resolve merged sweep values (file, then flags) into a validated SweepSpec."""
    unknown = set(values) - set(SWEEP_KEYS)
    if unknown:
        raise SpecError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    try:
        depths = values.get("depths")
        if depths is None:
            raise SpecError("no depths given (--depths 20,110 or 'depths:' in the config)")
        listed = isinstance(depths, (list, tuple))
        depth_list = [int(d) for d in depths] if listed else parse_ints("depths", str(depths))
        hs = values.get("h")
        if hs is None:
            raise SpecError("no h grid given (--h 0.1,1 or --h 0.001..20)")
        h_list = [float(v) for v in hs] if isinstance(hs, (list, tuple)) else parse_h_grid(str(hs))
        seeds = parse_seeds(values.get("seeds", 1))
        noise = values.get("train_noise", 0.0)
        listed = isinstance(noise, (list, tuple))
        noise_list = [float(v) for v in noise] if listed else parse_floats("train_noise", str(noise))
        options = {k: values[k] for k in RUN_KEYS if values.get(k) is not None}
        if "milestones" in options and not isinstance(options["milestones"], (list, tuple)):
            options["milestones"] = parse_ints("milestones", str(options["milestones"]), allow_empty=True)
        if "milestones" in options:
            options["milestones"] = tuple(int(m) for m in options["milestones"])
        spec = SweepSpec(tuple(dict.fromkeys(depth_list)), tuple(dict.fromkeys(h_list)), tuple(seeds),
                         tuple(dict.fromkeys(noise_list)), tuple(sorted(options.items())), source)
        if not spec.depths or not spec.hs:
            raise SpecError("the grid is empty")
        spec.runs()  # validate every run now, before anything is written
    except SpecError as exc:
        if source != "flags" and not str(exc).startswith(source):
            raise SpecError(f"{source}: {exc}") from None
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{source}: {exc}") from None
    return spec


# ---------------------------------------------------------------------------------------------
# Presets and flags together: the runs a sweep names
# ---------------------------------------------------------------------------------------------


def merge_preset(path: Path | None, flags: dict) -> dict:
    """A preset's values (validated, its execution keys too, naming the file), then the flags given."""
    file_values = load_sweep_file(path) if path is not None else {}
    if path is not None:
        try:
            make_execution({k: file_values[k] for k in EXECUTION_KEYS if k in file_values})
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None
    return {**file_values, **{k: v for k, v in flags.items() if v is not None}}


def sweep_runs(values: dict, source: str, precision: str) -> list[RunSpec]:
    """The distinct runs of merged sweep values, with `precision` already resolved (fp32 or bf16)."""
    grid = {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
    if isinstance(grid.get("seeds"), str) and grid["seeds"].isdigit():
        grid["seeds"] = int(grid["seeds"])
    runs = make_sweep_spec({**grid, "precision": precision}, source).runs()
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
