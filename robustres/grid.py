"""Grids of runs: list syntax, sweep presets (YAML) and the runs a sweep names.

A preset's keys and their types come from spec.py's field tables: the axes and every option.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .axes import axis_values, parse_floats, parse_h_grid, parse_ints, real, whole
from .datasets import DATASETS
from .spec import (
    AXES,
    EXECUTION_OPTIONS,
    EXECUTION_TYPES,
    FIELD_TYPES,
    GRID_FIELDS,
    MAX_DEPTH,
    MAX_RUNS,
    MIN_SEEDS,
    PRECISIONS,
    RUN_OPTIONS,
    RunSpec,
    SpecError,
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
# Sweeps: grids over the table's axes (depth x h x seed x training noise x lr ...), from flags and/or YAML
# ---------------------------------------------------------------------------------------------

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


def flag_of(f) -> str:
    """An axis's flag, named by its sweep key (--depths, --h, --lr, --weight-decay)."""
    return "--" + meta(f).grid.replace("_", "-")


def _axis_values(f, values: dict, max_runs: int) -> tuple:
    """One axis's distinct values from merged sweep values (axes.py's grammar); not given, its
    default: one value, make_run_spec's, or a required axis refused."""
    m, key = meta(f), meta(f).grid
    given = values.get(key)
    if given is None and m.grid_required:
        noun = f"{key} grid" if m.grid_syntax == "range" else key
        raise SpecError(f"no {noun} given ({flag_of(f)} {m.metavar} or '{key}:' in the config)")
    if given is None:  # the fewest seeds report answers from; for any other axis, the run's default
        return axis_values(f, MIN_SEEDS, flag_of(f), max_runs) if m.grid_syntax == "seeds" else (None,)
    return axis_values(f, given, flag_of(f), max_runs)


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
            given = options["milestones"]
            options["milestones"] = tuple(whole("milestones", m) for m in given) if isinstance(given, list) \
                else tuple(parse_ints("milestones", str(given), allow_empty=True))
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
