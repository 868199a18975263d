"""What to run, declared once: the field table of a run and of its execution.

`RunSpec` *is* the table of run fields. Each field carries its metadata (help text, CLI flag,
whether it is a shared option, which sweep key lists it), and everything else is derived from it
by introspection: the YAML keys and their types (grid.py), the options of `train`, `sweep` and
`noise-eval` (cli/options.py), the store schema (store.py) and report's protocol columns
(report.py). Adding an option is one field here plus its validation in `make_run_spec`.

A `RunSpec` is the identity of one training run: its `run_id` hashes every field, so every field
must be one that can change the result. Where and how the run executes (device, store, data
folder, pack size) is an `Execution`, declared the same way and kept out of the hash.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from .datasets import (  # noqa: F401  (TEXT_DEPTHS, check_depth: named here too, for models.py)
    FAMILIES,
    GENERATED_DATASETS,
    H_RULES,
    SYNTHETIC_DEFAULT,
    TEXT_DEPTHS,
    Family,
    check_depth,
    check_limits,
    effective_h,
    family_of,
    residual_blocks,
    sizes_before_reading,
)
from .errors import DataError, DataMissing, SpecError, StoreError, shown  # noqa: F401  (named here for callers)
from .hardware import check_device

ID_VERSION = 1  # bumped when the meaning of a RunSpec field changes, so old run ids do not collide

# Bounds on whole-number fields, so that no input can ask for more than a machine could ever do.
MAX_SEED = 2**63 - 1  # seeds are int64 on the device
MAX_EPOCHS = 100_000
MAX_SIZE = 100_000_000  # batch size, training/test set sizes, limits
MAX_WIDTH = 100_000  # the MLP's width and hidden size
MAX_RUNS = 10_000  # runs a sweep's grid may hold unless --max-runs says more
MAX_DEPTH = 10_000  # the deepest ResNet in the literature has 1202 layers

MIN_SEEDS = 3  # completed runs an h needs before report recommends it (here: --help shows it, no pandas)

NOISE_KINDS = {modality: family.noise_kinds for modality, family in FAMILIES.items()}
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")


def modality_of(dataset: str, synthetic_like: str | None = None) -> str:
    return family_of(dataset, synthetic_like).modality


# ---------------------------------------------------------------------------------------------
# The field table: a field's metadata
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByFamily:
    """A default that depends on the dataset: read from its family in datasets.py."""

    pick: typing.Callable[[Family], object] | None = None  # None: the family's protocol value of the field

    def of(self, family: Family, name: str):
        return getattr(family.protocol, name) if self.pick is None else self.pick(family)


BY_PROTOCOL = ByFamily()


@dataclass(frozen=True)
class Said:
    """A default that a rule computes (from the device, the environment), said in words in --help."""

    words: str


@dataclass(frozen=True)
class Meta:
    help: str  # without the default: --help adds it from `default` (see help_text)
    flag: str | None = None  # the CLI flag (default --name-with-dashes); "--x/--no-x" for booleans
    option: bool = True  # a shared option of train/sweep (and a YAML key); False: derived
    # The value a run gets when the option is not given: a value, ByFamily or Said; None: the
    # dataclass default (or no default worth saying).
    default: object = None
    grid: str | None = None  # the sweep key that lists this field's values (depths, h, seeds, ...): an axis
    grid_syntax: str = "list"  # list (of the field's type), range (h's: A..B too) or seeds (a count too): axes.py
    grid_required: bool = False  # a sweep must list this axis (else: one value, the default)
    noise_eval: str = ""  # noise-eval's option too: in "train-noise" mode (as every axis) or in "both" modes
    metavar: str = ""  # what the flag takes, shown in --help
    cli_type: type | None = None  # what the flag and YAML key take where not the field's type (pack_size: N|auto)
    sweep_only: bool = False  # execution options that only sweeps have
    # Fields added after stores existed: hashed into the run_id only when set, so that the runs of
    # older stores (which never had the field) keep their ids.
    hash_if_set: bool = False


def _field(help: str, *, default=MISSING, default_factory=MISSING, fill=None, **meta):
    """A field of the table: its dataclass default, and `fill`, the default a run or command takes
    when the option is not given (Meta.default)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"robustres": Meta(help, default=fill, **meta)})


def meta(f) -> Meta:
    return f.metadata["robustres"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides the outcome of one training run (and nothing else)."""

    dataset: str = _field("two-moons, cifar10, imagefolder, ag-news or synthetic.", fill="two-moons",
                          noise_eval="both", metavar="NAME")
    model: str = _field("resnet, vdcnn or mlp: follows from the dataset.", option=False)
    depth: int = _field("Depths, comma-separated, e.g. 20,110,218.", fill=BY_PROTOCOL, grid="depths",
                        grid_required=True, noise_eval="both", metavar="LIST")
    h: float = _field("h values: 0.1,0.5,1 (a list), 0.001..20 (1-2-5 steps per decade) or 0.001..1:7 (7 "
                      "log-spaced).", fill=0.1, grid="h", grid_syntax="range", grid_required=True, noise_eval="both",
                      metavar="GRID")
    seed: int = _field("5 (a count: seeds 0..4), 7,8,9 (those) or 3..6 (a range).", fill=0, grid="seeds",
                       grid_syntax="seeds", metavar="SEEDS")
    bn: bool = _field("BatchNorm in every block: --bn alone is on; --bn on,off trains both.", fill=BY_PROTOCOL,
                      flag="--bn/--no-bn", grid="bn", metavar="on,off")
    epochs: int = _field("Epochs.", fill=BY_PROTOCOL, noise_eval="train-noise", metavar="N")
    batch_size: int = _field("Batch sizes, e.g. 128 or 64,128.", fill=BY_PROTOCOL, grid="batch_size", metavar="LIST")
    lr: float = _field("Initial learning rates: 0.1, 0.05,0.5 (a list) or 0.01..1 (a range, as --h).", fill=BY_PROTOCOL,
                       grid="lr", grid_syntax="range", metavar="GRID")
    momentum: float = _field("SGD momentum, e.g. 0.9 or 0,0.9.", fill=0.9, grid="momentum", metavar="LIST")
    milestones: tuple[int, ...] = _field(
        "Epochs after which lr is multiplied by gamma, e.g. 40,60; 'none' for a fixed lr.", fill=BY_PROTOCOL,
        noise_eval="train-noise", metavar="LIST", cli_type=str)
    gamma: float = _field("Learning-rate factor at each milestone.", fill=0.1, metavar="X")
    weight_decay: float = _field("Weight decay (the paper: none), e.g. 5e-4, 0,5e-4 or 1e-5..1e-3.", fill=0.0,
                                 grid="weight_decay", grid_syntax="range", metavar="GRID")
    optimizer: str = _field("sgd or adam; both: sgd,adam.", fill="sgd", grid="optimizer", metavar="LIST")
    train_noise: float = _field("Training-noise levels, comma-separated, e.g. 0,0.1,0.2 (a search searches each on "
                                "its own).", fill=0.0, grid="train_noise", metavar="LIST")
    noise_kind: str = _field("gaussian, salt-pepper or mosaic (images), char-swap (text), gaussian (points).",
                             fill=ByFamily(lambda family: family.noise_kinds[0]), metavar="KIND")
    # fp32 | bf16 (autocast); part of the identity: it changes results. The option also takes
    # `auto` (bf16 on CUDA, fp32 on a CPU), resolved before a RunSpec is made (fp32 where nothing
    # resolved it: the dataclass default).
    precision: str = _field("fp32, bf16 (autocast) or auto: bf16 on CUDA, fp32 on a CPU.", default="fp32",
                            fill=Said("auto"), noise_eval="train-noise", metavar="NAME")
    limit_train: int | None = _field("Train on a fixed, class-balanced subset of N examples.", default=None,
                                     noise_eval="train-noise", metavar="N")
    limit_test: int | None = _field("Test on a fixed, class-balanced subset of N examples.", default=None,
                                    noise_eval="both", metavar="N")
    # Only for generated datasets (two-moons, synthetic).
    n_train: int | None = _field("Generated datasets: training examples.", default=None,
                                 fill=ByFamily(lambda family: family.sizes[0]), metavar="N")
    n_test: int | None = _field("Generated datasets: test examples.", default=None,
                                fill=ByFamily(lambda family: family.sizes[1]), metavar="N")
    moons_noise: float | None = _field("Two-moons: std of the points' noise.", default=None, fill=0.2, metavar="X")
    synthetic_like: str | None = _field("Synthetic data: the dataset whose shape it imitates.", default=None,
                                        fill=SYNTHETIC_DEFAULT.reference, flag="--like", metavar="NAME")
    # Only for the MLP ResNet.
    width: int | None = _field("MLP ResNet: feature width.", default=None, fill=2, metavar="N")
    hidden: int | None = _field("MLP ResNet: hidden width inside a block.", default=None, fill=16, metavar="N")
    h_rule: str = _field("How h follows depth: fixed (h as given), sqrt (h / sqrt(L)), linear (h / L) or learned (a "
                         "trainable scale per block from h); L: residual blocks. E.g. fixed,sqrt.", default="fixed",
                         fill="fixed", grid="h_rule", metavar="LIST", hash_if_set=True)
    # A hash of the dataset's content (data.py), set when the runs are planned; None for generated
    # data, whose spec fields say everything. Added later: runs stored before it keep their ids.
    data_fingerprint: str | None = _field("The data's content hash (set from the data, not an option).",
                                          default=None, option=False, hash_if_set=True)

    @property
    def modality(self) -> str:
        return modality_of(self.dataset, self.synthetic_like)

    @property
    def effective_h(self) -> float:
        """The h of x + h * F(x) each block starts with: h, or h / sqrt(L) or h / L by its h_rule."""
        return effective_h(self.h, self.h_rule or "fixed", residual_blocks(self.model, self.depth))

    @functools.cached_property  # a frozen spec's id never changes; plans of 10,000 runs ask often
    def run_id(self) -> str:
        hashed = {f.name: getattr(self, f.name) for f in fields(self)  # hash_if_set: not when unset or its fill
                  if not meta(f).hash_if_set or getattr(self, f.name) not in (None, meta(f).default)}
        hashed["milestones"] = list(self.milestones)
        payload = json.dumps({"v": ID_VERSION, **hashed}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        kwargs = {k: v for k, v in d.items() if k in FIELD_TYPES}
        kwargs["milestones"] = tuple(int(m) for m in kwargs.get("milestones") or ())
        return cls(**{**kwargs, **{f.name: meta(f).default for f in RUN_FIELDS  # a later field, absent: its fill
                                   if meta(f).hash_if_set and kwargs.get(f.name) is None and meta(f).default}})

    def with_(self, **changes) -> RunSpec:
        return replace(self, **changes)


def value_type(hint) -> type:
    """int, float, bool, str or tuple: the type a field's (or option's) values have, None aside."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if args and typing.get_origin(hint) is not tuple else hint
    return tuple if typing.get_origin(hint) is tuple else hint


RUN_FIELDS = fields(RunSpec)
FIELD_TYPES = {f.name: value_type(t) for f, t in zip(RUN_FIELDS, typing.get_type_hints(RunSpec).values())}
# The options every run of a sweep shares (YAML keys and flags of train/sweep); the grid axes are
# listed by their own keys.
RUN_OPTIONS = tuple(f for f in RUN_FIELDS if meta(f).option and meta(f).grid is None)
GRID_FIELDS = {meta(f).grid: f.name for f in RUN_FIELDS if meta(f).grid}  # sweep key -> field
# What must agree for runs to be pooled over seeds: all but what report groups by (recommend.BLOCK,
# h) and the seed. A sweep axis added later (lr) is in it: each of its values is a block of its own.
PROTOCOL_FIELDS = tuple(f.name for f in RUN_FIELDS if f.name not in ("dataset", "depth", "h", "seed", "train_noise"))
AXES = tuple(f for f in RUN_FIELDS if meta(f).grid)  # the sweep axes, in field order

# ---------------------------------------------------------------------------------------------
# make_run_spec: the paper's protocol defaults, then every check
# ---------------------------------------------------------------------------------------------


def _finite(name: str, value: float, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool):
        raise SpecError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{name} must be a number, got {shown(value)}") from None
    if not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise SpecError(f"{name} must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{name} must be >= {minimum:g}, got {value:g}")
    return value


def checked_count(name: str, value, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be a whole number, got {shown(value)}")
    if value < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {shown(value)}")
    if value > maximum:
        raise SpecError(f"{name} must be <= {maximum:,}, got {shown(value)}")
    return value


def default_of(name: str, family: Family | None = None):
    """The value a run of `family`'s data gets for field `name` when it is not given (Meta.default,
    else the dataclass default; None: none). Fields that only some data or models have get theirs
    whatever the family: _check_sizes sets them to None where they do not apply."""
    f = next(f for f in RUN_FIELDS if f.name == name)
    default = meta(f).default
    if isinstance(default, ByFamily):
        return default.of(family, name)
    if default is not None and not isinstance(default, Said):
        return default
    return None if f.default is MISSING else f.default


def make_run_spec(**values) -> RunSpec:
    """Fill in the defaults for the dataset (its family's protocol, from datasets.py), validate
    everything, return a RunSpec.

    Takes any RunSpec field but `model` and `data_fingerprint` (None or absent: the default); the
    fingerprint comes from the data (`spec.with_(data_fingerprint=...)`, see execution/train.py)."""
    unknown = set(values) - set(FIELD_TYPES) | ({"model", "data_fingerprint"} & set(values))
    if unknown:
        raise SpecError(f"unknown run option {sorted(unknown)[0]!r}")
    given = {k: x for k, x in values.items() if x is not None}
    dataset = given.get("dataset", default_of("dataset"))
    family = family_of(dataset, given.get("synthetic_like"))
    if dataset != "synthetic" and "synthetic_like" in given:
        raise SpecError("--like applies only to --dataset synthetic")
    v = {**{name: default_of(name, family) for name in FIELD_TYPES}, **given, "dataset": dataset,
         "model": family.model, "synthetic_like": family.reference if dataset == "synthetic" else None}
    _check_schedule(v)
    _check_noise_and_precision(v, family.modality)
    _check_sizes(v, given, dataset, family)
    return RunSpec(**{name: v.get(name) for name in FIELD_TYPES})


def _check_schedule(v: dict) -> None:
    v["depth"] = checked_count("depth", v["depth"], maximum=MAX_DEPTH)
    check_depth(v["model"], v["depth"])
    v["h"] = _finite("h", v["h"], minimum=0.0)
    v["seed"] = checked_count("seed", v["seed"], minimum=0, maximum=MAX_SEED)
    v["bn"] = bool(v["bn"])
    v["epochs"] = checked_count("epochs", v["epochs"], maximum=MAX_EPOCHS)
    v["batch_size"] = checked_count("batch size", v["batch_size"])
    v["lr"] = _finite("lr", v["lr"], positive=True)
    v["momentum"] = _finite("momentum", v["momentum"], minimum=0.0)
    if v["momentum"] >= 1:
        raise SpecError(f"momentum must be < 1, got {v['momentum']:g}")
    milestones = v["milestones"] = tuple(v["milestones"])
    for m in milestones:
        checked_count("milestone", m, maximum=MAX_EPOCHS)
    if list(milestones) != sorted(set(milestones)):
        raise SpecError(f"milestones must be strictly increasing, got {','.join(map(str, milestones))}")
    v["gamma"] = _finite("gamma", v["gamma"], positive=True)
    v["weight_decay"] = _finite("weight decay", v["weight_decay"], minimum=0.0)
    if v["h_rule"] not in H_RULES:
        raise SpecError(f"unknown h rule {v['h_rule']!r}; choose one of: {', '.join(H_RULES)}")
    if v["h"] == 0 and v["h_rule"] in ("sqrt", "linear"):
        raise SpecError(f"h = 0 with --h-rule {v['h_rule']} is h = 0 at every depth: give h > 0 (0 starts learned)")
    if v["optimizer"] not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {v['optimizer']!r}; choose one of: {', '.join(OPTIMIZERS)}")


def _check_noise_and_precision(v: dict, modality: str) -> None:
    v["train_noise"] = _finite("train noise", v["train_noise"], minimum=0.0)
    if v["train_noise"] > 1:
        raise SpecError(f"train noise is a level in [0, 1], got {v['train_noise']:g}")
    kinds = NOISE_KINDS[modality]
    if v["noise_kind"] not in kinds:
        raise SpecError(f"noise kind {v['noise_kind']!r} does not apply to {modality} data; "
                        f"choose: {', '.join(kinds)}")
    if v["precision"] not in PRECISIONS:
        raise SpecError(f"unknown precision {v['precision']!r}; choose one of: {', '.join(PRECISIONS)}")


def _check_sizes(v: dict, given: dict, dataset: str, family: Family) -> None:
    """Sizes and limits; the fields that only some data or models have are refused where they do
    not apply (if given) and emptied there (their default)."""
    generated = dataset in GENERATED_DATASETS
    for name in ("limit_train", "limit_test", "n_train", "n_test"):
        if name in given:
            if name.startswith("n_") and not generated:
                raise SpecError(f"--{name.replace('_', '-')} applies only to generated datasets "
                                f"({', '.join(GENERATED_DATASETS)})")
            checked_count(name.replace("_", "-"), v[name])
        elif name.startswith("n_") and not generated:
            v[name] = None
    if dataset == "two-moons":
        v["moons_noise"] = _finite("moons noise", v["moons_noise"], minimum=0.0)
    elif "moons_noise" in given:
        raise SpecError("--moons-noise applies only to --dataset two-moons")
    else:
        v["moons_noise"] = None
    mlp = family.model == "mlp"
    if not mlp or v["bn"]:  # batch norm: a batch of one example has no batch statistics
        if v["batch_size"] == 1:
            raise SpecError("--batch-size 1 does not work with batch norm (every ResNet here, the MLP with --bn)")
        if v.get("limit_train") == 1 or (generated and v["n_train"] == 1):
            raise SpecError("one training example does not work with batch norm: give 2 or more")
    if not mlp and ("width" in given or "hidden" in given):
        raise SpecError("--width and --hidden apply only to the MLP ResNet (two-moons data)")
    for name in ("width", "hidden"):
        v[name] = checked_count(name, v[name], maximum=MAX_WIDTH) if mlp else None
    sizes = sizes_before_reading(dataset, v["n_train"], v["n_test"])
    if sizes is not None:
        check_limits(v.get("limit_train"), v.get("limit_test"), sizes, dataset)


def resolve_precision(precision: str | None, device_type: str) -> str:
    """`auto` (or nothing) -> bf16 on CUDA, fp32 elsewhere; the run records what it resolved to."""
    if precision in (None, "auto"):
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


# ---------------------------------------------------------------------------------------------
# Execution: where and how runs execute; never part of a run's identity
# ---------------------------------------------------------------------------------------------


def _folder_from_env(name: str) -> Path | None:
    """A folder named by an environment variable: None when unset or empty; one of only spaces is
    refused by its own name (the user never typed the flag it stands in for)."""
    value = os.environ.get(name)
    if value and not value.strip():
        raise SpecError(f"${name} holds only whitespace; name a folder, or unset it")
    return Path(value) if value else None


def default_store() -> Path:
    return _folder_from_env("ROBUSTRES_STORE") or Path("robustres-store")


def default_data_dir() -> Path:
    return _folder_from_env("ROBUSTRES_DATA") or Path.home() / ".cache" / "robustres"


@dataclass(frozen=True)
class Execution:
    """The execution options, declared like RunSpec's fields (the same Meta drives flags and YAML)."""

    device: str = _field("auto, cpu, cuda or cuda:N.", default="auto", noise_eval="both", metavar="NAME")
    store: Path = _field("Store folder.", default_factory=default_store,
                         fill=Said("$ROBUSTRES_STORE, else ./robustres-store"), noise_eval="both", metavar="PATH",
                         cli_type=str)
    data_dir: Path = _field("Data folder.", default_factory=default_data_dir,
                            fill=Said("$ROBUSTRES_DATA, else ~/.cache/robustres"), noise_eval="both", metavar="PATH",
                            cli_type=str)
    pack_size: int | None = _field("Most runs trained together as one network.", default=None,
                                   fill=Said("auto, as many as fit"), noise_eval="train-noise", metavar="N|auto",
                                   cli_type=str)
    fuse: bool | None = _field("Fused network or models in turn.", default=None,
                               fill=Said("a rule by device and model family"), noise_eval="train-noise",
                               flag="--fuse/--no-fuse")
    compile: bool = _field("torch.compile the network.", default=False, noise_eval="train-noise", flag="--compile")
    threads: int | None = _field("CPU threads of the training process.", default=None,
                                 fill=Said("$ROBUSTRES_THREADS, else half the usable cores, at least 1: safe when "
                                           "another job shares them"), noise_eval="both", metavar="N")
    checkpoint_every: float = _field(
        "Checkpoint at an epoch's end once this many seconds passed since the last (0: every epoch); always "
        "after the last epoch.", default=10.0, noise_eval="train-noise", metavar="SECONDS")
    track_layers: tuple[str, ...] = _field(
        "Record weight and gradient norms of these weight layers (1-based, or 'last'), e.g. 2,50,last.",
        default=(), metavar="LIST", cli_type=str)
    track_every: int = _field("With --track-layers: every step of the first epoch, then every N steps.",
                              default=10, metavar="N")
    executor: str = _field("local (this process) or ray (each pack a Ray task; pip install 'robustres[ray]').",
                           default="local", sweep_only=True, metavar="NAME")
    ray_address: str | None = _field("Ray cluster address (HOST:PORT or 'auto').", default=None,
                                     fill=Said("start a local Ray"), sweep_only=True, metavar="ADDRESS")
    max_runs: int = _field("Most runs the grid may hold, counted before it is expanded.",
                           default=MAX_RUNS, sweep_only=True, metavar="N")
    workers: int | None = _field("Local worker processes, packs queued to free ones.", default=None,
                                 fill=Said("one per visible GPU, else 1"), sweep_only=True, metavar="N")
    force: bool = _field("Retrain runs that the store already holds.", default=False, option=False)
    stop_at: int | None = _field("Train only to the end of this epoch (a search's rung).", default=None, option=False)


EXECUTION_FIELDS = fields(Execution)
EXECUTION_TYPES = {f.name: value_type(t) for f, t in zip(EXECUTION_FIELDS, typing.get_type_hints(Execution).values())}
EXECUTION_OPTIONS = tuple(f for f in EXECUTION_FIELDS if meta(f).option)


def parse_track_layers(text) -> tuple[str, ...]:
    """'2,50,last' -> ('2', '50', 'last'); layers are 1-based weight layers in forward order."""
    if not text:
        return ()
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if item == "last" or (item.isdigit() and int(item) >= 1):
            out.append(item)
        else:
            raise SpecError(f"--track-layers: {item!r} is not a layer number >= 1 or 'last'")
    return tuple(dict.fromkeys(out))


def make_execution(values: dict) -> Execution:
    """Validate execution options (flags or YAML keys; None or absent: the default)."""
    v = {k: x for k, x in values.items() if x is not None}
    unknown = set(v) - set(EXECUTION_TYPES)
    if unknown:
        raise SpecError(f"unknown execution option {sorted(unknown)[0]!r}")
    if "device" in v:
        v["device"] = check_device(str(v["device"]))
    if "pack_size" in v:
        size = str(v["pack_size"]).strip()
        if size == "auto":
            del v["pack_size"]
        elif not size.isdigit() or int(size) < 1:
            raise SpecError(f"--pack-size must be auto or a whole number >= 1, got {v['pack_size']!r}")
        else:
            v["pack_size"] = int(size)
    if "checkpoint_every" in v and not float(v["checkpoint_every"]) >= 0:
        raise SpecError(f"--checkpoint-every must be >= 0 seconds, got {float(v['checkpoint_every']):g}")
    if "track_every" in v and v["track_every"] < 1:
        raise SpecError(f"--track-every must be >= 1, got {v['track_every']}")
    threads_from = "--threads"
    if "threads" not in v and os.environ.get("ROBUSTRES_THREADS", "").strip():
        threads_from, text = "ROBUSTRES_THREADS", os.environ["ROBUSTRES_THREADS"].strip()
        v["threads"] = int(text) if text.isdigit() else text
    if "threads" in v:
        v["threads"] = checked_count(threads_from, v["threads"], maximum=4096)
    if "max_runs" in v:
        v["max_runs"] = checked_count("--max-runs", v["max_runs"], maximum=MAX_SIZE)
    if "workers" in v and v["workers"] < 1:
        raise SpecError(f"--workers must be >= 1, got {v['workers']}")
    if v.get("executor", "local") not in ("local", "ray"):
        raise SpecError(f"unknown executor {v['executor']!r}; choose local or ray")
    if v.get("executor") == "ray" and importlib.util.find_spec("ray") is None:
        raise SpecError("--executor ray needs Ray: pip install 'robustres[ray]'")
    v["track_layers"] = parse_track_layers(v.get("track_layers"))
    for name in ("store", "data_dir"):
        if name in v:
            if not str(v[name]).strip():
                raise SpecError(f"--{name.replace('_', '-')} is empty; name a folder")
            v[name] = Path(v[name])
    return Execution(**v)
