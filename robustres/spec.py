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

# The error types live in errors.py; they are named here too, where every caller finds them.
from .errors import DataError, DataMissing, SpecError, StoreError, shown  # noqa: F401
from .hardware import check_device

# Bump when the meaning of a RunSpec field changes, so old run ids do not collide with new ones.
ID_VERSION = 1


# Bounds on whole-number fields, so that no input can ask for more than a machine could ever do.
MAX_SEED = 2**63 - 1  # seeds are int64 on the device
MAX_EPOCHS = 100_000
MAX_SIZE = 100_000_000  # batch size, training/test set sizes, limits
MAX_WIDTH = 100_000  # the MLP's width and hidden size
MAX_RUNS = 10_000  # runs a sweep's grid may hold unless --max-runs says more
MAX_DEPTH = 10_000  # the deepest ResNet in the literature has 1202 layers


# Completed runs an h needs before report recommends it (report --min-seeds); here, not in report.py,
# so that the CLI's help text can show it without importing pandas.
MIN_SEEDS = 3


# ---------------------------------------------------------------------------------------------
# Datasets, model families and the paper's protocols
# ---------------------------------------------------------------------------------------------

# modality -> model family; the family decides which depths are valid.
FAMILY_OF_MODALITY = {"image": "resnet", "text": "vdcnn", "points": "mlp"}

# dataset -> modality, or None for `synthetic` (its modality is that of the dataset it imitates).
DATASETS = {"two-moons": "points", "cifar10": "image", "imagefolder": "image", "ag-news": "text",
            "synthetic": None}
SYNTHETIC_LIKE = ("cifar10", "ag-news", "two-moons")
GENERATED = ("two-moons", "synthetic")  # datasets made in memory, sized by n_train / n_test
SYNTHETIC_SIZES = {"cifar10": (50_000, 10_000), "ag-news": (120_000, 7_600), "two-moons": (1_000, 1_000)}
# (training, test) examples of datasets whose size is fixed: known before any file is read.
KNOWN_SIZES = {"cifar10": (50_000, 10_000)}

# The paper's protocols (section 5 of the paper and its published scripts), per modality.
PROTOCOLS = {
    "image": dict(depth=20, epochs=80, batch_size=128, lr=0.1, milestones=(40, 60), bn=True),
    # Batch 64: the official ag-news_torch/run.sh (the paper's text gives no batch size for text).
    "text": dict(depth=17, epochs=15, batch_size=64, lr=0.1, milestones=(), bn=True),
    # Two-moons is our own toy protocol: small enough to train in about a second on a CPU.
    "points": dict(depth=10, epochs=30, batch_size=64, lr=0.1, milestones=(20,), bn=False),
}

TEXT_DEPTHS = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}
NOISE_KINDS = {"image": ("gaussian", "salt-pepper", "mosaic"), "text": ("char-swap",), "points": ("gaussian",)}
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")


def modality_of(dataset: str, synthetic_like: str | None = None) -> str:
    if dataset not in DATASETS:
        raise SpecError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset == "synthetic":
        like = synthetic_like or "cifar10"
        if like not in SYNTHETIC_LIKE:
            raise SpecError(f"unknown --like {like!r} for synthetic data; choose one of: {', '.join(SYNTHETIC_LIKE)}")
        return DATASETS[like]
    return DATASETS[dataset]


def check_depth(family: str, depth: int) -> None:
    """Raise a one-line SpecError naming the valid choices when `depth` does not fit `family`."""
    if family == "resnet":
        if depth < 8 or (depth - 2) % 6:
            lower = max(8, depth - (depth - 2) % 6) if depth >= 8 else None
            upper = 8 if depth < 8 else lower + 6
            nearest = f"{lower}, {upper}" if lower and lower != upper else f"{upper}"
            raise SpecError(f"depth {depth} is not 6n+2 with n >= 1 (CIFAR ResNet); nearest: {nearest}")
    elif family == "vdcnn":
        if depth not in TEXT_DEPTHS:
            choices = ", ".join(str(d) for d in TEXT_DEPTHS)
            raise SpecError(f"depth {depth} is not a text ResNet depth; choose one of: {choices}")
    elif depth < 1:  # mlp
        raise SpecError(f"depth {depth} is not valid for the MLP ResNet: it counts blocks, >= 1")


# ---------------------------------------------------------------------------------------------
# The field table: a field's metadata
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    help: str
    flag: str | None = None  # the CLI flag (default --name-with-dashes); "--x/--no-x" for booleans
    option: bool = True  # a shared option of train/sweep (and a YAML key); False: derived
    grid: str | None = None  # the sweep key that lists this field's values (depths, h, seeds, ...)
    noise_eval: bool = False  # also an option of `noise-eval --mode train-noise`
    metavar: str = ""  # what the flag takes, shown in --help
    sweep_only: bool = False  # execution options that only sweeps have
    # Fields added after stores existed: hashed into the run_id only when set, so that the runs of
    # older stores (which never had the field) keep their ids.
    hash_if_set: bool = False


def _field(help: str, *, default=MISSING, default_factory=MISSING, **meta):
    return field(default=default, default_factory=default_factory, metadata={"robustres": Meta(help, **meta)})


def meta(f) -> Meta:
    return f.metadata["robustres"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides the outcome of one training run (and nothing else)."""

    dataset: str = _field("two-moons, cifar10, imagefolder, ag-news or synthetic (default two-moons).",
                          noise_eval=True, metavar="NAME")
    model: str = _field("resnet, vdcnn or mlp: follows from the dataset.", option=False)
    depth: int = _field("Depth: 6n+2 (images), 9/17/29/49 (text), blocks (two-moons).", grid="depths")
    h: float = _field("The step factor of every block.", grid="h")
    seed: int = _field("Seed of the initialisation, data order, augmentation and noise.", grid="seeds")
    bn: bool = _field("BatchNorm in every block (default: on, off for two-moons).", flag="--bn/--no-bn")
    epochs: int = _field("Epochs (default: the paper's protocol for the dataset).", noise_eval=True,
                         metavar="N")
    batch_size: int = _field("Batch size (default: 128, two-moons 64).", metavar="N")
    lr: float = _field("Initial learning rate (default 0.1).", noise_eval=True, metavar="X")
    momentum: float = _field("SGD momentum (default 0.9).", metavar="X")
    milestones: tuple[int, ...] = _field(
        "Epochs after which lr is multiplied by gamma, e.g. 40,60; 'none' for a fixed lr (default: per "
        "dataset).", noise_eval=True, metavar="LIST")
    gamma: float = _field("Learning-rate factor at each milestone (default 0.1).", metavar="X")
    weight_decay: float = _field("Weight decay (default 0: the paper uses none).", metavar="X")
    optimizer: str = _field("sgd or adam (default sgd).", metavar="NAME")
    train_noise: float = _field("Noise level from 0 to 1 on the training inputs; test data stay clean.",
                                grid="train_noise")
    noise_kind: str = _field("gaussian, salt-pepper or mosaic (images), char-swap (text), gaussian (points).",
                             metavar="KIND")
    # fp32 | bf16 (autocast); part of the identity: it changes results. The option also takes
    # `auto` (bf16 on CUDA, fp32 on a CPU), resolved before a RunSpec is made.
    precision: str = _field("fp32, bf16 (autocast) or auto: bf16 on CUDA, fp32 on a CPU (default auto).",
                            default="fp32", noise_eval=True, metavar="NAME")
    limit_train: int | None = _field("Train on a fixed, class-balanced subset of N examples.", default=None,
                                     noise_eval=True, metavar="N")
    limit_test: int | None = _field("Test on a fixed, class-balanced subset of N examples.", default=None,
                                    noise_eval=True, metavar="N")
    # Only for generated datasets (two-moons, synthetic).
    n_train: int | None = _field("Generated datasets: training examples (two-moons 1000).", default=None,
                                 metavar="N")
    n_test: int | None = _field("Generated datasets: test examples (two-moons 1000).", default=None, metavar="N")
    moons_noise: float | None = _field("Two-moons: std of the points' noise (default 0.2).", default=None,
                                       metavar="X")
    synthetic_like: str | None = _field("Synthetic data: the dataset whose shape it imitates (default cifar10).",
                                        default=None, flag="--like", metavar="NAME")
    # Only for the MLP ResNet.
    width: int | None = _field("MLP ResNet: feature width (default 2).", default=None, metavar="N")
    hidden: int | None = _field("MLP ResNet: hidden width inside a block (default 16).", default=None, metavar="N")
    # A hash of the dataset's content (data.py), set when the runs are planned; None for generated
    # data, whose spec fields say everything. Added later: runs stored before it keep their ids.
    data_fingerprint: str | None = _field("The data's content hash (set from the data, not an option).",
                                          default=None, option=False, hash_if_set=True)

    @property
    def modality(self) -> str:
        return modality_of(self.dataset, self.synthetic_like)

    @functools.cached_property  # a frozen spec's id never changes; plans of 10,000 runs ask often
    def run_id(self) -> str:
        hashed = {f.name: getattr(self, f.name) for f in fields(self)
                  if getattr(self, f.name) is not None or not meta(f).hash_if_set}
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
        return cls(**kwargs)

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
# What must agree for runs to be pooled over seeds: everything but the dataset and the grid axes.
PROTOCOL_FIELDS = tuple(f.name for f in RUN_FIELDS if meta(f).grid is None and f.name != "dataset")


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


def _count(name: str, value, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be a whole number, got {shown(value)}")
    if value < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {shown(value)}")
    if value > maximum:
        raise SpecError(f"{name} must be <= {maximum:,}, got {shown(value)}")
    return value


# Defaults that do not depend on the dataset; the others come from PROTOCOLS or the data.
DEFAULTS = dict(dataset="two-moons", h=0.1, seed=0, momentum=0.9, gamma=0.1, weight_decay=0.0,
                optimizer="sgd", train_noise=0.0, precision="fp32")


def make_run_spec(**values) -> RunSpec:
    """Fill in the paper's protocol defaults for the dataset, validate everything, return a RunSpec.

    Takes any RunSpec field but `model` and `data_fingerprint` (None or absent: the default); the
    fingerprint comes from the data (`spec.with_(data_fingerprint=...)`, see execution/train.py)."""
    unknown = set(values) - set(FIELD_TYPES) | ({"model", "data_fingerprint"} & set(values))
    if unknown:
        raise SpecError(f"unknown run option {sorted(unknown)[0]!r}")
    v = {**DEFAULTS, **{k: x for k, x in values.items() if x is not None}}
    dataset, like = v["dataset"], v.get("synthetic_like")
    modality = modality_of(dataset, like)
    if dataset != "synthetic" and like is not None:
        raise SpecError("--like applies only to --dataset synthetic")
    family, proto = FAMILY_OF_MODALITY[modality], PROTOCOLS[modality]
    v = {**proto, **v, "model": family}
    if dataset == "synthetic":
        v["synthetic_like"] = like or "cifar10"
    _check_schedule(v)
    _check_noise_and_precision(v, modality)
    _check_sizes(v, dataset, family)
    return RunSpec(**{name: v.get(name) for name in FIELD_TYPES})


def _check_schedule(v: dict) -> None:
    v["depth"] = _count("depth", v["depth"], maximum=MAX_DEPTH)
    check_depth(v["model"], v["depth"])
    v["h"] = _finite("h", v["h"], minimum=0.0)
    v["seed"] = _count("seed", v["seed"], minimum=0, maximum=MAX_SEED)
    v["bn"] = bool(v["bn"])
    v["epochs"] = _count("epochs", v["epochs"], maximum=MAX_EPOCHS)
    v["batch_size"] = _count("batch size", v["batch_size"])
    v["lr"] = _finite("lr", v["lr"], positive=True)
    v["momentum"] = _finite("momentum", v["momentum"], minimum=0.0)
    if v["momentum"] >= 1:
        raise SpecError(f"momentum must be < 1, got {v['momentum']:g}")
    milestones = v["milestones"] = tuple(v["milestones"])
    for m in milestones:
        _count("milestone", m, maximum=MAX_EPOCHS)
    if list(milestones) != sorted(set(milestones)):
        raise SpecError(f"milestones must be strictly increasing, got {','.join(map(str, milestones))}")
    v["gamma"] = _finite("gamma", v["gamma"], positive=True)
    v["weight_decay"] = _finite("weight decay", v["weight_decay"], minimum=0.0)
    if v["optimizer"] not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {v['optimizer']!r}; choose one of: {', '.join(OPTIMIZERS)}")


def _check_noise_and_precision(v: dict, modality: str) -> None:
    v["train_noise"] = _finite("train noise", v["train_noise"], minimum=0.0)
    if v["train_noise"] > 1:
        raise SpecError(f"train noise is a level in [0, 1], got {v['train_noise']:g}")
    kinds = NOISE_KINDS[modality]
    v["noise_kind"] = v.get("noise_kind") or kinds[0]
    if v["noise_kind"] not in kinds:
        raise SpecError(f"noise kind {v['noise_kind']!r} does not apply to {modality} data; "
                        f"choose: {', '.join(kinds)}")
    if v["precision"] not in PRECISIONS:
        raise SpecError(f"unknown precision {v['precision']!r}; choose one of: {', '.join(PRECISIONS)}")


def _check_sizes(v: dict, dataset: str, family: str) -> None:
    for name in ("limit_train", "limit_test"):
        if v.get(name) is not None:
            _count(name.replace("_", "-"), v[name])
    for name in ("n_train", "n_test"):
        if v.get(name) is not None:
            if dataset not in GENERATED:
                raise SpecError(f"--{name.replace('_', '-')} applies only to generated datasets "
                                f"({', '.join(GENERATED)})")
            _count(name.replace("_", "-"), v[name])
    if dataset == "synthetic":
        train, test = SYNTHETIC_SIZES[v["synthetic_like"]]
        v["n_train"], v["n_test"] = v.get("n_train") or train, v.get("n_test") or test
    if dataset == "two-moons":
        v["n_train"], v["n_test"] = v.get("n_train") or 1000, v.get("n_test") or 1000
        noise = v.get("moons_noise")
        v["moons_noise"] = 0.2 if noise is None else _finite("moons noise", noise, minimum=0.0)
    elif v.get("moons_noise") is not None:
        raise SpecError("--moons-noise applies only to --dataset two-moons")
    if family != "mlp" or v["bn"]:  # batch norm: a batch of one example has no batch statistics
        if v["batch_size"] == 1:
            raise SpecError("--batch-size 1 does not work with batch norm (every ResNet here, the MLP with --bn)")
        if v.get("limit_train") == 1 or (dataset in GENERATED and v["n_train"] == 1):
            raise SpecError("one training example does not work with batch norm: give 2 or more")
    if family == "mlp":
        v["width"] = 2 if v.get("width") is None else _count("width", v["width"], maximum=MAX_WIDTH)
        v["hidden"] = 16 if v.get("hidden") is None else _count("hidden", v["hidden"], maximum=MAX_WIDTH)
    elif v.get("width") is not None or v.get("hidden") is not None:
        raise SpecError("--width and --hidden apply only to the MLP ResNet (two-moons data)")
    sizes = (v["n_train"], v["n_test"]) if dataset in GENERATED else KNOWN_SIZES.get(dataset)
    if sizes is not None:
        check_limits(v.get("limit_train"), v.get("limit_test"), sizes, dataset)


def check_limits(limit_train: int | None, limit_test: int | None, sizes: tuple[int, int], source: str) -> None:
    """--limit-train / --limit-test larger than the data is refused: it would silently mean all of it
    (and still enter the run id)."""
    for flag, limit, size, split in (("--limit-train", limit_train, sizes[0], "training"),
                                     ("--limit-test", limit_test, sizes[1], "test")):
        if limit is not None and limit > size:
            raise SpecError(f"{flag} {limit} is more than the {size:,} {split} examples of {source}")


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

    device: str = _field("auto, cpu, cuda or cuda:N (default auto).", default="auto", metavar="NAME")
    store: Path = _field("Store folder (default: $ROBUSTRES_STORE, else ./robustres-store).",
                         default_factory=default_store, metavar="PATH")
    data_dir: Path = _field("Data folder (default: $ROBUSTRES_DATA, else ~/.cache/robustres).",
                            default_factory=default_data_dir, metavar="PATH")
    pack_size: int | None = _field("Most runs trained together as one network (default auto: as many as fit).",
                                   default=None, metavar="N|auto")
    fuse: bool | None = _field("Fused network or models in turn (default: a rule by device and model family).",
                               default=None, flag="--fuse/--no-fuse")
    compile: bool = _field("torch.compile the network.", default=False, flag="--compile")
    threads: int | None = _field("CPU threads of the training process (default: $ROBUSTRES_THREADS, else half "
                                 "the usable cores, at least 1: safe when another job shares them).",
                                 default=None, metavar="N")
    checkpoint_every: float = _field(
        "Checkpoint at an epoch's end once this many seconds passed since the last (0: every epoch); always "
        "after the last epoch (default 10).", default=10.0, metavar="SECONDS")
    track_layers: tuple[str, ...] = _field(
        "Record weight and gradient norms of these weight layers (1-based, or 'last'), e.g. 2,50,last.",
        default=(), metavar="LIST")
    track_every: int = _field("With --track-layers: every step of the first epoch, then every N steps (default 10).",
                              default=10, metavar="N")
    executor: str = _field("local (this process) or ray (each pack a Ray task; pip install 'robustres[ray]').",
                           default="local", sweep_only=True, metavar="NAME")
    ray_address: str | None = _field("Ray cluster address (HOST:PORT or 'auto'); default: start a local Ray.",
                                     default=None, sweep_only=True, metavar="ADDRESS")
    max_runs: int = _field("Most runs the grid may hold, counted before it is expanded (default 10,000).",
                           default=MAX_RUNS, sweep_only=True, metavar="N")
    workers: int | None = _field("Local worker processes, packs queued to free ones (default: one per visible "
                                 "GPU, else 1).", default=None, sweep_only=True, metavar="N")
    force: bool = _field("Retrain runs that the store already holds.", default=False, option=False)
    stop_at: int | None = _field("Train only to the end of this epoch (a search's rung).", default=None, option=False)


EXECUTION_FIELDS = fields(Execution)
EXECUTION_TYPES = {f.name: value_type(t) for f, t in zip(EXECUTION_FIELDS, typing.get_type_hints(Execution).values())}
EXECUTION_OPTIONS = tuple(f for f in EXECUTION_FIELDS if meta(f).option)
# Options that only training has (noise-eval's test mode refuses them).
TRAINING_EXECUTION = ("pack_size", "fuse", "compile", "checkpoint_every", "track_layers", "track_every")


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
        v["threads"] = _count(threads_from, v["threads"], maximum=4096)
    if "max_runs" in v:
        v["max_runs"] = _count("--max-runs", v["max_runs"], maximum=MAX_SIZE)
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
