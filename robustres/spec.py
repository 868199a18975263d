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
NOISE_KINDS = {"image": ("gaussian",), "text": ("char-swap",), "points": ("gaussian",)}
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
