"""Datasets as compact tensors: the loaders, their decode caches and --limit subsets, and what a
dry run can know of a dataset without reading it.

A dataset is loaded once into a `Data` (images uint8 [N, C, H, W], text int16 codes [N, 1024],
points float32 [N, 2]) and moved whole to the training device, where transforms.py's batched ops
(crop and flip, noise, normalisation) make each batch: no DataLoader workers, nothing per sample
in Python on the hot path.

Data read from files carries a fingerprint, a hash of its content that enters the run ids (see
docs/store.md, Run identity): image folders and AG-NEWS compute it once and keep it in their
decode cache; CIFAR-10's is a constant, since torchvision verifies its files.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import agnews
from .agnews import UNKNOWN_CODE
from .atomic import write_atomic
from .datasets import AG_NEWS, OFFICIAL, TWO_MOONS, check_limits, dataset, family_of, sizes_before_reading
from .spec import DataError, DataMissing, RunSpec

DATA_SEED = 0  # generated data and --limit subsets are the same for every run seed
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the paper's normalisation constants
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1
# torchvision verifies CIFAR-10 against this checksum (CIFAR10.tgz_md5), so the data behind every
# cifar10 run is the same: its fingerprint is a constant, known without the files.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FINGERPRINT = hashlib.sha256(f"cifar10:{CIFAR10_MD5}".encode()).hexdigest()[:16]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_BYTES = 170_498_071  # the size of the archive CIFAR10_MD5 names


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
    fingerprint: str | None = None  # of the whole dataset (before --limit-*); None for generated data
    source: str = ""  # what and where, for messages: "imagefolder /data/pets"

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


def load(spec: RunSpec, data_dir: Path, write_cache: bool = True) -> Data:
    """The dataset of `spec` on the CPU, with --limit-train / --limit-test applied."""
    limits = (spec.limit_train, spec.limit_test)
    return limit(load_source(spec, data_dir, limits, write_cache), *limits)


@dataclass(frozen=True)
class Opened:
    """A data source whose size is known and whose content is not read yet (an image folder listed,
    AG-NEWS parsed or taken from its cache): `read(write_cache)` gives the whole dataset."""

    name: str  # what and where, for messages: "imagefolder /data/pets"
    sizes: tuple[int, int]  # training and test examples, before --limit-*
    read: Callable[[bool], Data]


def open_source(spec: RunSpec, data_dir: Path) -> Opened:
    """The source of `spec`, opened: its size known before its content is decoded or any cache written."""
    if spec.dataset == "imagefolder":
        return open_imagefolder(data_dir)
    if spec.dataset == "ag-news":
        return open_ag_news(data_dir)
    sizes = sizes_before_reading(spec.dataset, spec.n_train, spec.n_test)
    if spec.dataset == "two-moons":
        return Opened("two-moons", sizes, lambda _: two_moons(spec.n_train, spec.n_test, spec.moons_noise))
    if spec.dataset == "synthetic":
        return Opened("synthetic", sizes, lambda _: synthetic(spec.synthetic_like, spec.n_train, spec.n_test))
    if spec.dataset == "cifar10":
        return Opened("cifar10", sizes, lambda _: cifar10(data_dir))
    raise DataError(f"unknown dataset {spec.dataset!r}")  # pragma: no cover - make_run_spec rejects it


def load_source(spec: RunSpec, data_dir: Path, limits: tuple = (None, None), write_cache: bool = True) -> Data:
    """The whole dataset of `spec`. This is where --limit-train / --limit-test meet the data's real
    size (once, for the largest limits of every run that reads it): after the source is opened and
    before anything is decoded or cached. (make_run_spec answers early, with the same check, where
    the size is known without files: generated data and CIFAR-10.)"""
    try:
        opened = open_source(spec, Path(data_dir))
        check_limits(*limits, opened.sizes, opened.name)
        return opened.read(write_cache)
    except (PermissionError, NotADirectoryError, IsADirectoryError) as exc:  # a place this user may not read
        raise DataError(f"{spec.dataset}: cannot read {exc.filename or data_dir}: {exc.strerror or exc}") from None


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
    """The fixed subsets of --limit-train / --limit-test (checked against the size by load_source)."""
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
    return Data("points", train_x, train_y, test_x, test_y, TWO_MOONS.class_names, source="two-moons")


def synthetic(like: str, n_train: int, n_test: int) -> Data:
    """Random inputs with the shape, dtype and class count of `like`, for benchmarks."""
    g = torch.Generator().manual_seed(DATA_SEED)
    family = family_of("synthetic", like)
    classes, modality, shape = family.class_names, family.modality, family.input_shape
    if modality == "image":
        make = lambda n: torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)  # noqa: E731
    elif modality == "text":
        make = lambda n: torch.randint(1, UNKNOWN_CODE + 1, (n, *shape), generator=g).to(torch.int16)  # noqa: E731
    else:
        make = lambda n: torch.randn(n, *shape, generator=g)  # noqa: E731
    k = len(classes)
    data = Data(modality, make(n_train), torch.randint(0, k, (n_train,), generator=g),
                make(n_test), torch.randint(0, k, (n_test,), generator=g), classes, source=f"synthetic {like}")
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
        if cifar_archive_damage(data_dir):  # else torchvision downloads over it, or says "not found" offline
            raise DataMissing(f"cifar10: {cifar_archive_damage(data_dir)}; unless another process is downloading "
                              "it now, delete it (robustres then downloads CIFAR-10) or put the real one "
                              "there") from None
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
                raise DataMissing(
                    f"cifar10: not found in {data_dir} and the download failed ({type(exc).__name__}); "
                    f"put cifar-10-python.tar.gz or its cifar-10-batches-py/ folder there"
                ) from None
        if parts is None:
            raise DataMissing(
                f"cifar10: not found in {data_dir} (offline); put cifar-10-python.tar.gz or its "
                f"cifar-10-batches-py/ folder there"
            )
    tensors = []
    for part in parts:
        x = torch.from_numpy(np.ascontiguousarray(part.data)).permute(0, 3, 1, 2).contiguous()
        tensors += [x, torch.tensor(part.targets, dtype=torch.long)]
    return Data("image", *tensors, family_of("cifar10").class_names, torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD),
                CIFAR10_FINGERPRINT, f"cifar10 {data_dir}")


def _cache_path(root: Path, kind: str, key: str) -> Path:
    """Next to the data when that folder is writable, else in the user's cache folder."""
    name = f".robustres-cache-{kind}-{key}.pt"
    if os.access(root, os.W_OK):
        return root / name
    return Path.home() / ".cache" / "robustres" / name


def _save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def _cache_key(root: Path, files: list[Path]) -> str:
    """The cache key: where the files are, their names, sizes and times (any change decodes again)."""
    h = hashlib.sha256(f"{CACHE_VERSION}:{root.resolve()}:{len(files)}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _content_hash(kind: str, root: Path, files: list[Path], parts) -> str:
    """A data fingerprint: the file list and sizes (relative to the root, so a copied or touched
    folder keeps it) and the content, `parts` (decoded tensors or the files' bytes)."""
    h = hashlib.sha256(f"{kind}:{len(files)}:".encode())
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}:{f.stat().st_size};".encode())
    for part in parts:
        h.update(part)
    return h.hexdigest()[:16]


def _tensor_bytes(blob: dict):
    for name in ("train_x", "train_y", "test_x", "test_y"):
        t = blob[name].contiguous()
        yield f"{name}:{tuple(t.shape)}:{t.dtype};".encode()
        yield t.numpy().reshape(-1).view(np.uint8).data


def _read_cache(path: Path) -> dict | None:
    """A decoded cache, or None when there is none or it is damaged (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
    except Exception:
        return None
    ok = isinstance(blob, dict) and all(isinstance(blob.get(k), torch.Tensor)
                                        for k in ("train_x", "train_y", "test_x", "test_y"))
    return blob if ok else None


def _write_cache(blob: dict, path: Path) -> None:
    try:
        _save_atomic(blob, path)
    except OSError:
        pass  # caching is an optimisation; a read-only place only costs the next run a decode


def _image_files(root: Path) -> tuple[list[str], dict[str, list[Path]]]:
    if not root.is_dir():
        raise DataMissing(f"imagefolder: data directory {root} does not exist")
    missing = [split for split in ("train", "test") if not (root / split).is_dir()]
    if missing:
        error = DataMissing if len(missing) == 2 else DataError  # one split only: a bad layout
        raise error(f"imagefolder: {root / missing[0]} is missing; expected {root}/train/<class>/* and "
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
        dangling = next((f for f in files[split] if not f.exists()), None)  # a symlink to nothing
        if dangling is not None:
            raise DataError(f"imagefolder: {dangling} is a symlink to {os.readlink(dangling)}, which does not exist")
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


def _decode_folder(classes: list[str], files: dict[str, list[Path]]) -> dict:
    blob = {}
    label_of = {c: i for i, c in enumerate(classes)}
    for split in ("train", "test"):
        blob[f"{split}_x"] = _decode_images(files[split])
        blob[f"{split}_y"] = torch.tensor([label_of[f.parent.name] for f in files[split]])
    if blob["train_x"].shape[1:] != blob["test_x"].shape[1:]:
        raise DataError("imagefolder: train and test images differ in size")
    return blob


def open_imagefolder(root: Path) -> Opened:
    """train/<class>/* and test/<class>/*, listed; read: decoded once and cached as uint8 tensors,
    with the fingerprint of the decoded content (computed once, kept in the cache)."""
    root = Path(root)
    classes, files = _image_files(root)
    return Opened(f"imagefolder {root}", (len(files["train"]), len(files["test"])),
                  lambda write_cache: _read_imagefolder(root, classes, files, write_cache))


def _read_imagefolder(root: Path, classes: list[str], files: dict[str, list[Path]], write_cache: bool) -> Data:
    everything = files["train"] + files["test"]
    cache = _cache_path(root, "imagefolder", _cache_key(root, everything))
    blob = _read_cache(cache)
    if blob is None:
        blob = _decode_folder(classes, files)
    if not isinstance(blob.get("fingerprint"), str):  # decoded now, or cached before fingerprints
        blob["fingerprint"] = _content_hash("imagefolder", root, everything, _tensor_bytes(blob))
        if write_cache:
            _write_cache(blob, cache)
    x = blob["train_x"]
    pixels = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
    # Channel statistics of the training images, over a strided sample for speed.
    sample = pixels[:, :: max(1, pixels.shape[1] // 2_000_000)].float() / 255
    return Data("image", x, blob["train_y"], blob["test_x"], blob["test_y"], tuple(classes),
                sample.mean(1), sample.std(1), blob["fingerprint"], f"imagefolder {root}")


# ---------------------------------------------------------------------------------------------
# AG-NEWS
# ---------------------------------------------------------------------------------------------

def open_ag_news(data_dir: Path) -> Opened:
    """classes.txt, train.csv and test.csv, parsed once and cached; read: with the fingerprint of
    the files' bytes (kept in the cache)."""
    root = agnews.find_root(Path(data_dir))
    files = [root / "classes.txt", root / "train.csv", root / "test.csv"]
    classes = agnews.read_classes(root)
    cache = _cache_path(root, "ag-news", _cache_key(root, files))
    blob = _read_cache(cache)
    if blob is None:
        blob = {k: torch.from_numpy(v) for k, v in agnews.read_splits(root, classes).items()}

    def read(write_cache: bool) -> Data:
        if not isinstance(blob.get("fingerprint"), str):
            blob["fingerprint"] = _content_hash("ag-news", root, files, (f.read_bytes() for f in files))
            if write_cache:
                _write_cache(blob, cache)
        return Data("text", blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], classes,
                    fingerprint=blob["fingerprint"], source=f"ag-news {root}")

    return Opened(f"ag-news {root}", (len(blob["train_y"]), len(blob["test_y"])), read)


# ---------------------------------------------------------------------------------------------
# Without loading: shapes for plans, fingerprints for dry runs, what a folder holds
# ---------------------------------------------------------------------------------------------


def peek(spec: RunSpec, data_dir: Path) -> tuple[tuple[int, ...], int]:
    """(input shape, class count) without loading the data; checks that files exist where needed."""
    data_dir = Path(data_dir)
    if spec.dataset == "imagefolder":
        classes, files = _image_files(data_dir)
        return tuple(_read_image(files["train"][0]).shape), len(classes)
    if spec.dataset == "ag-news":
        return AG_NEWS.input_shape, len(agnews.read_classes(agnews.find_root(data_dir)))
    family = family_of(spec.dataset, spec.synthetic_like)
    return family.input_shape, family.classes


@dataclass(frozen=True)
class Source:
    """What a plan needs of a dataset: None where the data is missing and the number unknown."""

    fingerprint: str | None
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    n_train: int | None  # the whole dataset, before --limit-*
    n_test: int | None
    missing: str | None = None  # why the data could not be read


def describe_source(spec: RunSpec, data_dir: Path, limits: tuple = (None, None)) -> Source:
    """For dry runs: the data's fingerprint, shape and size. Files that are there are read (an image
    folder decoded, unless cached) and checked as for training (`limits` too), and no cache is
    written; missing files leave the numbers that depend on them unknown (AG-NEWS keeps its 1024
    characters and 4 classes)."""
    sizes = sizes_before_reading(spec.dataset, spec.n_train, spec.n_test)
    if sizes is not None:  # make_run_spec checked the limits against these
        shape, classes = peek(spec, data_dir)
        return Source(CIFAR10_FINGERPRINT if spec.dataset == "cifar10" else None, shape, classes, *sizes)
    try:
        data = load_source(spec, data_dir, limits, write_cache=False)
    except DataMissing as exc:
        # The official dataset's shape and classes are known without its files; a folder's are not.
        family = dataset(spec.dataset).family
        known = (family.input_shape, family.classes) if dataset(spec.dataset).sized == OFFICIAL else (None, None)
        return Source(None, *known, None, None, str(exc))
    return Source(data.fingerprint, data.input_shape, data.num_classes, len(data.train_y), len(data.test_y))


def class_gaps(data: Data) -> str | None:
    """One line naming the classes without training or test examples, or None. A class missing from
    the test set is left out of the test accuracy (with one class left, any model scores 100 %)."""
    parts = []
    for split, labels in (("training", data.train_y), ("test", data.test_y)):
        counts = torch.bincount(labels, minlength=data.num_classes).tolist()
        empty = [repr(data.classes[c]) for c in range(data.num_classes) if counts[c] == 0]
        if empty:
            parts.append(f"{'class' if len(empty) == 1 else 'classes'} {', '.join(empty)} "
                         f"{'has' if len(empty) == 1 else 'have'} no {split} examples"
                         + (" (the test accuracy covers the other classes only)" if split == "test" else ""))
    return f"{data.source}: {'; '.join(parts)}" if parts else None


def cifar_archive_damage(data_dir: Path) -> str | None:
    """Why the CIFAR-10 archive in `data_dir` is damaged (its size), or None: whole or absent. A
    whole-sized one with another checksum is left to torchvision, which downloads it again."""
    path = data_dir / CIFAR10_ARCHIVE
    size = path.stat().st_size if path.is_file() else CIFAR10_ARCHIVE_BYTES
    return None if size == CIFAR10_ARCHIVE_BYTES else f"{path} is damaged: {size:,} bytes, not 170,498,071"


def available(data_dir: Path) -> dict[str, str]:
    """Which datasets `data_dir` holds, without loading any: name -> where (or what is missing)."""
    found = {"two-moons": "generated", "synthetic": "generated"}
    if (data_dir / "cifar-10-batches-py").is_dir():
        found["cifar10"] = str(data_dir / "cifar-10-batches-py")
    elif (data_dir / CIFAR10_ARCHIVE).is_file() and not cifar_archive_damage(data_dir):
        found["cifar10"] = str(data_dir / CIFAR10_ARCHIVE)
    try:
        found["ag-news"] = str(agnews.find_root(data_dir))
    except DataError:
        pass
    folders = [data_dir] + (sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else [])
    image_folders = [str(p) for p in folders if (p / "train").is_dir() and (p / "test").is_dir()]
    if image_folders:
        found["imagefolder"] = ", ".join(image_folders)
    return found
