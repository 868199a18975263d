"""The dataset table: what is known of each dataset before any file is read, declared once.

A family is a reference dataset and everything that goes with it: its sizes, input shape and
classes, the network that reads it and the paper's training protocol for it. Every dataset belongs
to a family (a synthetic one to that of the dataset it imitates) and says how its size is known.
spec.py (protocol defaults, checks), plan.py (cost before loading), data.py (stand-ins for missing
data), report.py (test-set sizes) and the dry run read these facts here and nowhere else.

Torch-free: spec.py imports it, and bad input is answered before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError


@dataclass(frozen=True)
class Protocol:
    """The training defaults of a family (each one a RunSpec field of the same name)."""

    depth: int
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    bn: bool


@dataclass(frozen=True)
class Family:
    reference: str  # the dataset these facts are of
    modality: str  # image | text | points: how inputs are stored, augmented and corrupted
    model: str  # the network (models.py); which depths it takes: spec.check_depth
    sizes: tuple[int, int]  # (training, test) examples of the reference dataset
    input_shape: tuple[int, ...]  # one example, as the network reads it
    class_names: tuple[str, ...]
    protocol: Protocol
    noise_kinds: tuple[str, ...]  # the first is the default

    @property
    def classes(self) -> int:
        return len(self.class_names)


CIFAR10 = Family(
    "cifar10", "image", "resnet", (50_000, 10_000), (3, 32, 32),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    # Section 5 of the paper: lr 0.1 divided by 10 at epochs 40 and 60, 80 epochs, batch 128;
    # depth 20 is the smallest of its CIFAR ResNets.
    Protocol(depth=20, epochs=80, batch_size=128, lr=0.1, milestones=(40, 60), bn=True),
    ("gaussian", "salt-pepper", "mosaic"))
AG_NEWS = Family(
    "ag-news", "text", "vdcnn", (120_000, 7_600), (1024,), ("world", "sports", "business", "sci/tech"),
    # The paper's text: lr 0.1, 15 epochs, no schedule; batch 64 is the official ag-news_torch/run.sh
    # (the text gives no batch size for text). Input: the paper's 1024 characters.
    Protocol(depth=17, epochs=15, batch_size=64, lr=0.1, milestones=(), bn=True),
    ("char-swap",))
TWO_MOONS = Family(
    "two-moons", "points", "mlp", (1_000, 1_000), (2,), ("upper", "lower"),
    # Our own toy protocol, not the paper's: small enough to train in about a second on a CPU; no
    # batch norm, so that the MLP ResNet is the bare Euler step.
    Protocol(depth=10, epochs=30, batch_size=64, lr=0.1, milestones=(20,), bn=False),
    ("gaussian",))

FAMILIES = {f.modality: f for f in (CIFAR10, AG_NEWS, TWO_MOONS)}

# How a dataset's size is known:
GENERATED = "generated"  # made in memory: n_train / n_test (default: the family's sizes)
VERIFIED = "verified"  # files checked against a checksum: the family's sizes, before any is read
OFFICIAL = "official"  # the reference's files, read from the data folder: its sizes, checked on reading
FOLDER = "folder"  # the user's own files: unknown until read (the family's numbers stand in for estimates)


@dataclass(frozen=True)
class Dataset:
    name: str
    family: Family | None  # None: synthetic, of the family of the dataset it imitates (--like)
    sized: str  # GENERATED, VERIFIED, OFFICIAL or FOLDER

    @property
    def generated(self) -> bool:
        return self.sized == GENERATED


DATASETS = {d.name: d for d in (
    Dataset("two-moons", TWO_MOONS, GENERATED),
    Dataset("cifar10", CIFAR10, VERIFIED),  # torchvision verifies CIFAR-10's archive
    Dataset("imagefolder", CIFAR10, FOLDER),
    Dataset("ag-news", AG_NEWS, OFFICIAL),
    Dataset("synthetic", None, GENERATED),
)}
# The text ResNet's depths (the paper's 9, 17, 29, 49): its blocks per stage of 64, 128, 256, 512 channels.
TEXT_DEPTHS = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}


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


def residual_blocks(model: str, depth: int) -> int:
    """L, the residual blocks of a network (what h rules divide by): 3n for the CIFAR ResNet of depth
    6n+2 (9 for ResNet-20, 54 for ResNet-110, 108 for ResNet-218), the text ResNet's blocks per stage
    summed, the MLP's depth (it counts blocks)."""
    if model == "resnet":
        return 3 * ((depth - 2) // 6)
    return sum(TEXT_DEPTHS[depth]) if model == "vdcnn" else depth


# How h follows depth (issue 25): h as given; c / sqrt(L) (depth-muP); c / L (CompleteP); a learned
# scale per block, initialised at the grid's value (ReZero at 0, SkipInit small).
H_RULES = ("fixed", "sqrt", "linear", "learned")


def effective_h(c: float, rule: str, blocks: int) -> float:
    """The h every block starts with, under `rule`, for the grid's value `c` and L = `blocks`."""
    return c / blocks ** 0.5 if rule == "sqrt" else c / blocks if rule == "linear" else c


SYNTHETIC_LIKE = tuple(f.reference for f in FAMILIES.values())
SYNTHETIC_DEFAULT = CIFAR10  # what synthetic data imitates unless --like says otherwise
GENERATED_DATASETS = tuple(name for name, d in DATASETS.items() if d.generated)


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise SpecError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def family_of(name: str, synthetic_like: str | None = None) -> Family:
    """The family of a dataset; synthetic data's is that of the dataset it imitates."""
    family = dataset(name).family
    if family is None:
        like = synthetic_like or SYNTHETIC_DEFAULT.reference
        if like not in SYNTHETIC_LIKE:
            raise SpecError(f"unknown --like {like!r} for synthetic data; choose one of: {', '.join(SYNTHETIC_LIKE)}")
        family = DATASETS[like].family
    return family


def sizes_before_reading(name: str, n_train: int | None, n_test: int | None) -> tuple[int, int] | None:
    """(training, test) examples known before any file is read: a generated dataset's own, a verified
    one's; None where only the files can say."""
    d = dataset(name)
    if d.generated:
        return n_train, n_test
    return d.family.sizes if d.sized == VERIFIED else None


def check_limits(limit_train: int | None, limit_test: int | None, sizes: tuple[int, int], source: str) -> None:
    """A limit larger than the data is refused (it would mean all of it, and still enter the run id); asked
    once the size is known: by spec._check_sizes without files, else by data.load_source (the pre-flight)."""
    for flag, limit, size, split in (("--limit-train", limit_train, sizes[0], "training"),
                                     ("--limit-test", limit_test, sizes[1], "test")):
        if limit is not None and limit > size:
            raise SpecError(f"{flag} {limit} is more than the {size:,} {split} examples of {source}")


def official_sizes(name: str) -> tuple[int, int] | None:
    """The published sizes of a dataset read from files (the reference's), None for a folder of one's own."""
    d = dataset(name)
    return d.family.sizes if d.sized in (VERIFIED, OFFICIAL) else None


def train_examples(spec, found: int | None = None) -> int:
    """Training examples per epoch of a run (a RunSpec), for costs: the data's own count (`found`,
    or a generated dataset's n_train) when known, else the family's; cut to --limit-train."""
    size = found or spec.n_train or family_of(spec.dataset, spec.synthetic_like).sizes[0]
    return min(size, spec.limit_train) if spec.limit_train else size


def data_key(spec, limited: bool = True) -> tuple:
    """The one key of "the same data": runs (RunSpecs) with equal keys train on identical data, the
    same source cut by the same --limit-train / --limit-test. limited=False: the same source before
    the limits, read once for every limit. (The data's fingerprint is not part of it: it comes from
    reading what this key names.)"""
    source = (spec.dataset, spec.synthetic_like, spec.n_train, spec.n_test, spec.moons_noise)
    return source + (spec.limit_train, spec.limit_test) if limited else source
