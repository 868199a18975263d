"""Validated, frozen descriptions of what to run.

Every command-line option and (later) every YAML key resolves into these dataclasses, and all
validation lives here, so the rest of the code can trust what it is handed. A `RunSpec` is the
identity of one training run: its `run_id` is a hash of every field that can change the result.
Where the run executes (device, data directory, store) is an `Execution`, kept out of the hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# Bump when the meaning of a RunSpec field changes, so old run ids do not collide with new ones.
ID_VERSION = 1


class SpecError(ValueError):
    """Bad input: the message is one line that names the problem."""


class DataError(Exception):
    """The data cannot be had: missing files, a bad layout, no network for a download."""


# ---------------------------------------------------------------------------------------------
# Datasets and model families
# ---------------------------------------------------------------------------------------------

# modality -> model family; the family decides which depths are valid.
FAMILY_OF_MODALITY = {"image": "resnet", "text": "vdcnn", "points": "mlp"}

# dataset -> modality, or None for `synthetic` (its modality is that of the dataset it imitates).
DATASETS = {
    "two-moons": "points",
    "cifar10": "image",
    "imagefolder": "image",
    "ag-news": "text",
    "synthetic": None,
}
SYNTHETIC_LIKE = ("cifar10", "ag-news", "two-moons")
GENERATED = ("two-moons", "synthetic")  # datasets made in memory, sized by n_train / n_test
SYNTHETIC_SIZES = {"cifar10": (50_000, 10_000), "ag-news": (120_000, 7_600), "two-moons": (1_000, 1_000)}

# The paper's protocols (section 5 of the paper and its published scripts), per modality.
PROTOCOLS = {
    "image": dict(depth=20, epochs=80, batch_size=128, lr=0.1, milestones=(40, 60), bn=True),
    "text": dict(depth=17, epochs=15, batch_size=128, lr=0.1, milestones=(), bn=True),
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
            raise SpecError(
                f"unknown --like {like!r} for synthetic data; choose one of: {', '.join(SYNTHETIC_LIKE)}"
            )
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
    elif family == "mlp":
        if depth < 1:
            raise SpecError(f"depth {depth} is not valid for the MLP ResNet: it counts blocks, >= 1")
    else:  # pragma: no cover - families come from FAMILY_OF_MODALITY
        raise SpecError(f"unknown model family {family!r}")


# ---------------------------------------------------------------------------------------------
# RunSpec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides the outcome of one training run (and nothing else)."""

    dataset: str
    model: str
    depth: int
    h: float
    seed: int
    bn: bool
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    milestones: tuple[int, ...]
    gamma: float
    weight_decay: float
    optimizer: str
    train_noise: float
    noise_kind: str
    precision: str = "fp32"  # fp32 | bf16 (autocast); part of the identity: it changes results
    limit_train: int | None = None
    limit_test: int | None = None
    # Only for generated datasets (two-moons, synthetic).
    n_train: int | None = None
    n_test: int | None = None
    moons_noise: float | None = None
    synthetic_like: str | None = None
    # Only for the MLP ResNet.
    width: int | None = None
    hidden: int | None = None

    @property
    def modality(self) -> str:
        return modality_of(self.dataset, self.synthetic_like)

    @property
    def run_id(self) -> str:
        payload = json.dumps({"v": ID_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["milestones"] = tuple(int(m) for m in kwargs.get("milestones") or ())
        return cls(**kwargs)

    def with_(self, **changes) -> "RunSpec":
        return replace(self, **changes)


def _finite(name: str, value: float, *, minimum: float | None = None, positive: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise SpecError(f"{name} must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{name} must be >= {minimum:g}, got {value:g}")
    return value


def _count(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {value}")
    return value


def make_run_spec(
    *,
    dataset: str = "two-moons",
    depth: int | None = None,
    h: float = 0.1,
    seed: int = 0,
    bn: bool | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    momentum: float = 0.9,
    milestones: tuple[int, ...] | list[int] | None = None,
    gamma: float = 0.1,
    weight_decay: float = 0.0,
    optimizer: str = "sgd",
    train_noise: float = 0.0,
    noise_kind: str | None = None,
    precision: str = "fp32",
    limit_train: int | None = None,
    limit_test: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    moons_noise: float | None = None,
    synthetic_like: str | None = None,
    width: int | None = None,
    hidden: int | None = None,
) -> RunSpec:
    """Fill in the paper's protocol defaults for the dataset, validate everything, return a RunSpec."""
    modality = modality_of(dataset, synthetic_like)
    if dataset != "synthetic" and synthetic_like is not None:
        raise SpecError("--like applies only to --dataset synthetic")
    if dataset == "synthetic":
        synthetic_like = synthetic_like or "cifar10"
    family = FAMILY_OF_MODALITY[modality]
    proto = PROTOCOLS[modality]

    depth = proto["depth"] if depth is None else _count("depth", depth)
    check_depth(family, depth)
    h = _finite("h", h, minimum=0.0)
    seed = _count("seed", seed, minimum=0)
    bn = proto["bn"] if bn is None else bool(bn)
    epochs = _count("epochs", proto["epochs"] if epochs is None else epochs)
    batch_size = _count("batch size", proto["batch_size"] if batch_size is None else batch_size)
    lr = _finite("lr", proto["lr"] if lr is None else lr, positive=True)
    momentum = _finite("momentum", momentum, minimum=0.0)
    if momentum >= 1:
        raise SpecError(f"momentum must be < 1, got {momentum:g}")
    milestones = tuple(proto["milestones"] if milestones is None else milestones)
    for m in milestones:
        _count("milestone", m)
    if list(milestones) != sorted(set(milestones)):
        raise SpecError(f"milestones must be strictly increasing, got {','.join(map(str, milestones))}")
    gamma = _finite("gamma", gamma, positive=True)
    weight_decay = _finite("weight decay", weight_decay, minimum=0.0)
    if optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    train_noise = _finite("train noise", train_noise, minimum=0.0)
    if train_noise > 1:
        raise SpecError(f"train noise is a level in [0, 1], got {train_noise:g}")
    kinds = NOISE_KINDS[modality]
    noise_kind = noise_kind or kinds[0]
    if noise_kind not in kinds:
        raise SpecError(f"noise kind {noise_kind!r} does not apply to {modality} data; choose: {', '.join(kinds)}")
    if precision not in PRECISIONS:
        raise SpecError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if limit_train is not None:
        _count("limit-train", limit_train)
    if limit_test is not None:
        _count("limit-test", limit_test)

    generated = dataset in GENERATED
    for name, value in (("n-train", n_train), ("n-test", n_test)):
        if value is not None:
            if not generated:
                raise SpecError(f"--{name} applies only to generated datasets ({', '.join(GENERATED)})")
            _count(name, value)
    if dataset == "synthetic":
        n_train = SYNTHETIC_SIZES[synthetic_like][0] if n_train is None else n_train
        n_test = SYNTHETIC_SIZES[synthetic_like][1] if n_test is None else n_test
    if dataset == "two-moons":
        n_train = 1000 if n_train is None else n_train
        n_test = 1000 if n_test is None else n_test
        moons_noise = 0.2 if moons_noise is None else _finite("moons noise", moons_noise, minimum=0.0)
    elif moons_noise is not None:
        raise SpecError("--moons-noise applies only to --dataset two-moons")

    if family == "mlp":
        width = 2 if width is None else _count("width", width)
        hidden = 16 if hidden is None else _count("hidden", hidden)
    elif width is not None or hidden is not None:
        raise SpecError("--width and --hidden apply only to the MLP ResNet (two-moons data)")

    return RunSpec(
        dataset=dataset, model=family, depth=depth, h=h, seed=seed, bn=bn, epochs=epochs,
        batch_size=batch_size, lr=lr, momentum=momentum, milestones=milestones, gamma=gamma,
        weight_decay=weight_decay, optimizer=optimizer, train_noise=train_noise,
        noise_kind=noise_kind, precision=precision, limit_train=limit_train, limit_test=limit_test, n_train=n_train,
        n_test=n_test, moons_noise=moons_noise, synthetic_like=synthetic_like, width=width,
        hidden=hidden,
    )


# ---------------------------------------------------------------------------------------------
# Execution: where and how runs execute; never part of a run's identity
# ---------------------------------------------------------------------------------------------


def default_store() -> Path:
    return Path(os.environ.get("ROBUSTRES_STORE") or "robustres-store")


def default_data_dir() -> Path:
    env = os.environ.get("ROBUSTRES_DATA")
    return Path(env) if env else Path.home() / ".cache" / "robustres"


@dataclass(frozen=True)
class Execution:
    device: str = "auto"
    store: Path = field(default_factory=default_store)
    data_dir: Path = field(default_factory=default_data_dir)
    force: bool = False
    pack_size: int | None = None  # None: as many as fit in free device memory
    fuse: bool | None = None  # None: measure fused against in-turn execution, take the faster
    compile: bool = False
    checkpoint_seconds: float = 10.0  # see engine.Options
    workers: int | None = None  # local worker processes; None: one per visible GPU (1 without)
    track_layers: tuple[str, ...] = ()  # --track-layers 2,50,last
    track_every: int = 10


def parse_track_layers(text: str | None) -> tuple[str, ...]:
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


def check_device(device: str) -> str:
    """Validate the device string's form; whether CUDA exists is checked where torch is loaded."""
    if device in ("auto", "cpu", "cuda"):
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise SpecError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


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


# Keys of a sweep (YAML file or flags): the grid, and every train option, applied to all runs.
GRID_KEYS = ("depths", "h", "seeds", "train_noise")
RUN_KEYS = ("dataset", "bn", "epochs", "batch_size", "lr", "momentum", "milestones", "gamma", "weight_decay",
            "optimizer", "noise_kind", "precision", "limit_train", "limit_test", "n_train", "n_test",
            "moons_noise", "synthetic_like", "width", "hidden")
EXECUTION_KEYS = ("device", "store", "data_dir", "pack_size", "fuse", "compile", "checkpoint_every", "executor",
                  "ray_address", "workers", "track_layers", "track_every")
SWEEP_KEYS = GRID_KEYS + RUN_KEYS + EXECUTION_KEYS
_TYPES = {"bn": bool, "fuse": bool, "compile": bool, "epochs": int, "batch_size": int, "limit_train": int,
          "limit_test": int, "n_train": int, "n_test": int, "width": int, "hidden": int,
          "lr": float, "momentum": float, "gamma": float, "weight_decay": float, "moons_noise": float,
          "checkpoint_every": float, "dataset": str, "optimizer": str, "noise_kind": str,
          "precision": str, "synthetic_like": str, "device": str, "store": str, "data_dir": str,
          "executor": str, "ray_address": str, "workers": int, "track_layers": str, "track_every": int}


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
        expected = _TYPES.get(norm)
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
        depth_list = [int(d) for d in depths] if isinstance(depths, (list, tuple)) else parse_ints("depths", str(depths))
        hs = values.get("h")
        if hs is None:
            raise SpecError("no h grid given (--h 0.1,1 or --h 0.001..20)")
        h_list = [float(v) for v in hs] if isinstance(hs, (list, tuple)) else parse_h_grid(str(hs))
        seeds = parse_seeds(values.get("seeds", 1))
        noise = values.get("train_noise", 0.0)
        noise_list = [float(v) for v in noise] if isinstance(noise, (list, tuple)) else parse_floats("train_noise", str(noise))
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
