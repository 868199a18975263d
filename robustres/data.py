"""Datasets as compact tensors, and the batched, per-sample transforms applied on the device.

A dataset is loaded once into a `Data` (images uint8 [N, C, H, W], text int16 codes [N, 1024],
points float32 [N, 2]) and moved whole to the training device. Augmentation (pad-4 random crop and
horizontal flip), training noise and normalisation then run as a few tensor ops per batch: nothing
per sample in Python on the hot path, no DataLoader workers.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomic
from .spec import DataError, RunSpec

DATA_SEED = 0  # generated data and --limit subsets are the same for every run seed
SEQ_LEN = 1024
# The paper's alphabet (its AG-NEWS data helper): codes 1..68; 0 pads, 69 is any other character.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:\u2019\"/|_#$%\u02c6&*\u02dc\u2018+=<>()[]{} \\"
UNKNOWN_CODE = 69
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the paper's normalisation constants
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1


@dataclass
class Data:
    modality: str  # image | text | points
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: torch.Tensor | None = None  # per channel, images only
    std: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device) -> "Data":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y),
                       test_x=move(self.test_x), test_y=move(self.test_y),
                       mean=move(self.mean), std=move(self.std))


def load(spec: RunSpec, data_dir: Path) -> Data:
    """The dataset of `spec` on the CPU, with --limit-train / --limit-test applied."""
    data_dir = Path(data_dir)
    if spec.dataset == "two-moons":
        data = two_moons(spec.n_train, spec.n_test, spec.moons_noise)
    elif spec.dataset == "synthetic":
        data = synthetic(spec.synthetic_like, spec.n_train, spec.n_test)
    elif spec.dataset == "cifar10":
        data = cifar10(data_dir)
    elif spec.dataset == "imagefolder":
        data = imagefolder(data_dir)
    elif spec.dataset == "ag-news":
        data = ag_news(data_dir)
    else:  # pragma: no cover - RunSpec validation rejects unknown names
        raise DataError(f"unknown dataset {spec.dataset!r}")
    return limit(data, spec.limit_train, spec.limit_test)


# ---------------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------------


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int = DATA_SEED) -> torch.Tensor:
    """Indices of a fixed, seeded subset of size n with classes as equal as the data allows."""
    if n >= len(labels):
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    pools = [p[torch.randperm(len(p), generator=g)] for p in pools]
    # Round-robin over classes: each class gives one more example until n are taken.
    take = [0] * num_classes
    remaining = n
    while remaining:
        open_classes = [c for c in range(num_classes) if take[c] < len(pools[c])]
        share = max(1, remaining // len(open_classes))
        for c in open_classes:
            extra = min(share, len(pools[c]) - take[c], remaining)
            take[c] += extra
            remaining -= extra
            if not remaining:
                break
    chosen = torch.cat([pools[c][: take[c]] for c in range(num_classes)])
    return chosen.sort().values


def limit(data: Data, n_train: int | None, n_test: int | None) -> Data:
    if n_train is not None:
        idx = balanced_subset(data.train_y, n_train, data.num_classes)
        data = replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])
    if n_test is not None:
        idx = balanced_subset(data.test_y, n_test, data.num_classes)
        data = replace(data, test_x=data.test_x[idx], test_y=data.test_y[idx])
    return data


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------


def _moons(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x.float(), y


def two_moons(n_train: int, n_test: int, noise: float) -> Data:
    g = torch.Generator().manual_seed(DATA_SEED)
    train_x, train_y = _moons(n_train, noise, g)
    test_x, test_y = _moons(n_test, noise, g)
    return Data("points", train_x, train_y, test_x, test_y, ("upper", "lower"))


def synthetic(like: str, n_train: int, n_test: int) -> Data:
    """Random inputs with the shape, dtype and class count of `like`, for benchmarks."""
    g = torch.Generator().manual_seed(DATA_SEED)
    if like == "cifar10":
        make = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
        classes, modality = CIFAR_CLASSES, "image"
    elif like == "ag-news":
        make = lambda n: torch.randint(1, UNKNOWN_CODE + 1, (n, SEQ_LEN), generator=g).to(torch.int16)  # noqa: E731
        classes, modality = ("world", "sports", "business", "sci/tech"), "text"
    else:
        make = lambda n: torch.randn(n, 2, generator=g)  # noqa: E731
        classes, modality = ("a", "b"), "points"
    k = len(classes)
    data = Data(modality, make(n_train), torch.randint(0, k, (n_train,), generator=g),
                make(n_test), torch.randint(0, k, (n_test,), generator=g), classes)
    if modality == "image":
        data.mean, data.std = torch.full((3,), 0.5), torch.full((3,), 0.29)
    return data


# ---------------------------------------------------------------------------------------------
# Files on disk
# ---------------------------------------------------------------------------------------------


def cifar10(data_dir: Path) -> Data:
    """torchvision's CIFAR-10 (checksum-verified) from data_dir, downloaded there if missing."""
    from torchvision.datasets import CIFAR10

    try:
        parts = [CIFAR10(str(data_dir), train=t, download=False) for t in (True, False)]
    except RuntimeError:
        if os.environ.get("ROBUSTRES_OFFLINE"):
            parts = None
        else:
            created = not data_dir.exists()
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                parts = [CIFAR10(str(data_dir), train=t, download=True) for t in (True, False)]
            except Exception as exc:  # no network, a proxy, a full disk: all end the same way
                if created and not any(data_dir.iterdir()):
                    data_dir.rmdir()  # leave nothing behind for a failed attempt
                raise DataError(
                    f"cifar10: not found in {data_dir} and the download failed ({type(exc).__name__}); "
                    f"put cifar-10-python.tar.gz or its cifar-10-batches-py/ folder there"
                ) from None
        if parts is None:
            raise DataError(
                f"cifar10: not found in {data_dir} (offline); put cifar-10-python.tar.gz or its "
                f"cifar-10-batches-py/ folder there"
            )
    tensors = []
    for part in parts:
        x = torch.from_numpy(np.ascontiguousarray(part.data)).permute(0, 3, 1, 2).contiguous()
        tensors += [x, torch.tensor(part.targets, dtype=torch.long)]
    return Data("image", *tensors, CIFAR_CLASSES, torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD))


def _cache_path(root: Path, kind: str, key: str) -> Path:
    """Next to the data when that folder is writable, else in the user's cache folder."""
    name = f".robustres-cache-{kind}-{key}.pt"
    if os.access(root, os.W_OK):
        return root / name
    return Path.home() / ".cache" / "robustres" / name


def _save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def _fingerprint(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}:{root.resolve()}:{len(files)}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _image_files(root: Path) -> tuple[list[str], dict[str, list[Path]]]:
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"imagefolder: {root / split} is missing; expected {root}/train/<class>/* and "
                            f"{root}/test/<class>/*")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"imagefolder: no class folders in {root / 'train'}")
    test_classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    if test_classes != classes:
        raise DataError(f"imagefolder: the class folders of {root / 'test'} differ from those of {root / 'train'}")
    files = {}
    for split in ("train", "test"):
        files[split] = [f for c in classes for f in sorted((root / split / c).iterdir())
                        if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files[split]:
            raise DataError(f"imagefolder: no images ({', '.join(IMAGE_SUFFIXES)}) under {root / split}")
    return classes, files


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
    except Exception as exc:
        raise DataError(f"imagefolder: cannot decode {path} ({type(exc).__name__})") from None


def _decode_images(paths: list[Path]) -> torch.Tensor:
    first = _read_image(paths[0])
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    for i, path in enumerate(paths):
        img = first if i == 0 else _read_image(path)
        if img.shape != first.shape:
            raise DataError(f"imagefolder: {path} is {tuple(img.shape[1:])}, the others "
                            f"{tuple(first.shape[1:])}; all images must share one size")
        out[i] = img
    return out


def imagefolder(root: Path) -> Data:
    """train/<class>/* and test/<class>/*, decoded once and cached as uint8 tensors."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"imagefolder: data directory {root} does not exist")
    classes, files = _image_files(root)
    cache = _cache_path(root, "imagefolder", _fingerprint(root, files["train"] + files["test"]))
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return _imagefolder_data(blob, classes)
        except Exception:
            pass  # a damaged cache is rebuilt below
    blob = {}
    for split in ("train", "test"):
        blob[f"{split}_x"] = _decode_images(files[split])
        label_of = {c: i for i, c in enumerate(classes)}
        blob[f"{split}_y"] = torch.tensor([label_of[f.parent.name] for f in files[split]])
    if blob["train_x"].shape[1:] != blob["test_x"].shape[1:]:
        raise DataError("imagefolder: train and test images differ in size")
    try:
        _save_atomic(blob, cache)
    except OSError:
        pass  # caching is an optimisation; a read-only place only costs the next run a decode
    return _imagefolder_data(blob, classes)


def _imagefolder_data(blob: dict, classes: list[str]) -> Data:
    x = blob["train_x"]
    pixels = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
    # Channel statistics of the training images, over a strided sample for speed.
    sample = pixels[:, :: max(1, pixels.shape[1] // 2_000_000)].float() / 255
    return Data("image", x, blob["train_y"], blob["test_x"], blob["test_y"], tuple(classes),
                sample.mean(1), sample.std(1))


# ---------------------------------------------------------------------------------------------
# AG-NEWS
# ---------------------------------------------------------------------------------------------

_CODE_OF = np.full(0x110000, UNKNOWN_CODE, dtype=np.int16)
for _i, _c in enumerate(ALPHABET):
    _CODE_OF[ord(_c)] = _i + 1


def encode_text(text: str, length: int = SEQ_LEN) -> np.ndarray:
    """Characters -> alphabet codes, truncated to `length` and zero-padded (the paper's char2vec)."""
    out = np.zeros(length, dtype=np.int16)
    cps = np.frombuffer(text[:length].encode("utf-32-le"), dtype=np.uint32)
    out[: len(cps)] = _CODE_OF[cps]
    return out


def read_ag_news_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows "class","title","description" -> (codes [N, 1024] int16, labels [N] 0-based).

    As in the paper's code: every field after the class, lower-cased, each followed by a space.
    The csv module handles the quotes ("" inside fields) and commas; backslash sequences and
    entities such as #36; are kept as the characters they are.
    """
    codes, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            try:
                label = int(row[0]) - 1
            except ValueError:
                raise DataError(f"ag-news: {path}:{lineno}: class {row[0]!r} is not a number") from None
            text = "".join(field.lower() + " " for field in row[1:])
            codes.append(encode_text(text))
            labels.append(label)
    if not codes:
        raise DataError(f"ag-news: {path} holds no rows")
    return np.stack(codes), np.asarray(labels, dtype=np.int64)


def _ag_news_root(data_dir: Path) -> Path:
    for root in (data_dir, data_dir / "ag_news_csv"):
        if all((root / f).is_file() for f in ("classes.txt", "train.csv", "test.csv")):
            return root
    raise DataError(
        f"ag-news: classes.txt, train.csv and test.csv not found in {data_dir} or {data_dir / 'ag_news_csv'}"
    )


def ag_news(data_dir: Path) -> Data:
    root = _ag_news_root(Path(data_dir))
    files = [root / "classes.txt", root / "train.csv", root / "test.csv"]
    classes = tuple(line.strip() for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip())
    cache = _cache_path(root, "ag-news", _fingerprint(root, files))
    blob = None
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
        except Exception:
            blob = None
    if blob is None:
        blob = {}
        for split in ("train", "test"):
            x, y = read_ag_news_csv(root / f"{split}.csv")
            if y.min() < 0 or y.max() >= len(classes):
                raise DataError(f"ag-news: {root / f'{split}.csv'} has classes outside 1..{len(classes)}")
            blob[f"{split}_x"], blob[f"{split}_y"] = torch.from_numpy(x), torch.from_numpy(y)
        try:
            _save_atomic(blob, cache)
        except OSError:
            pass
    return Data("text", blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], classes)


def peek(spec: RunSpec, data_dir: Path) -> tuple[tuple[int, ...], int]:
    """(input shape, class count) without loading the data; checks that files exist where needed."""
    data_dir = Path(data_dir)
    modality = spec.modality
    if spec.dataset == "imagefolder":
        if not data_dir.is_dir():
            raise DataError(f"imagefolder: data directory {data_dir} does not exist")
        classes, files = _image_files(data_dir)
        return tuple(_read_image(files["train"][0]).shape), len(classes)
    if spec.dataset == "ag-news":
        root = _ag_news_root(data_dir)
        lines = (root / "classes.txt").read_text(encoding="utf-8").splitlines()
        return (SEQ_LEN,), len([line for line in lines if line.strip()])
    if modality == "image":
        return (3, 32, 32), 10
    if modality == "text":
        return (SEQ_LEN,), 4
    return (2,), 2


def available(data_dir: Path) -> dict[str, str]:
    """Which datasets `data_dir` holds, without loading any: name -> where (or what is missing)."""
    found = {"two-moons": "generated", "synthetic": "generated"}
    if (data_dir / "cifar-10-batches-py").is_dir():
        found["cifar10"] = str(data_dir / "cifar-10-batches-py")
    elif (data_dir / "cifar-10-python.tar.gz").is_file():
        found["cifar10"] = str(data_dir / "cifar-10-python.tar.gz")
    try:
        found["ag-news"] = str(_ag_news_root(data_dir))
    except DataError:
        pass
    folders = [data_dir] + (sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else [])
    image_folders = [str(p) for p in folders if (p / "train").is_dir() and (p / "test").is_dir()]
    if image_folders:
        found["imagefolder"] = ", ".join(image_folders)
    return found
