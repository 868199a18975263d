"""The paper's robustness instruments on trained runs: accuracy on corrupted test inputs, and how
input noise grows through the blocks (Prop. 2); `evaluate_store` runs them over a store's runs and
records the tables. Also the trained two-moons models that Fig. 4 draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import data as D
from . import transforms as T
from .checkpoints import load_checkpoint
from .datasets import data_key
from .devices import resolve_device
from .models import init_model
from .rows import spec_from_row
from .spec import NOISE_KINDS, DataError, RunSpec, SpecError
from .store import Store
from .units import EVAL_BATCH

TEST_NOISE_SEED = 12345  # the corruption of the test set is fixed: every run sees the same one


def load_trained(spec: RunSpec, checkpoint: Path, data: D.Data, device: torch.device) -> torch.nn.Module:
    """A run's model from its checkpoint (weights only), in evaluation mode."""
    state = load_checkpoint(checkpoint, spec.run_id)
    if state is None:
        raise FileNotFoundError(f"no usable checkpoint for run {spec.run_id} at {checkpoint}")
    model = init_model(spec, data.num_classes, data.input_shape)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def corrupted_test_batch(data: D.Data, index: torch.Tensor, kind: str, level: float, batch: int) -> torch.Tensor:
    """Model inputs for test examples `index`, corrupted by `kind` at `level` (level 0: clean)."""
    x = data.test_x[index]
    seed = torch.tensor([TEST_NOISE_SEED], device=x.device)
    if data.modality == "image":
        x = T.to_float_images(x).unsqueeze(0)
        if level > 0:
            lv = torch.tensor([level], device=x.device)
            x = T.corrupt_images(x, kind, lv, lambda n: T.keyed_bits(seed, T.STREAM_TEST_NOISE, 0, batch, n))
        return T.normalize(x[0], data.mean, data.std)
    if data.modality == "text":
        if level > 0:
            x = T.char_swap(x, index, torch.full((len(index),), level, device=x.device),
                            torch.full((len(index),), TEST_NOISE_SEED, device=x.device))
        return x.long()
    if level > 0:
        bits = T.keyed_bits(seed, T.STREAM_TEST_NOISE, 0, batch, x.numel())
        x = T.gaussian_noise(x.unsqueeze(0), torch.tensor([level], device=x.device), bits, clip=False)[0]
    return x


@torch.no_grad()
def accuracy_under_noise(model: torch.nn.Module, data: D.Data, kind: str, level: float) -> float:
    correct, n = 0, len(data.test_y)
    for b, start in enumerate(range(0, n, EVAL_BATCH)):
        index = torch.arange(start, min(start + EVAL_BATCH, n), device=data.test_y.device)
        out = model(corrupted_test_batch(data, index, kind, level, b))[:, 0]
        correct += int((out.argmax(1) == data.test_y[index]).sum())
    return correct / n


@torch.no_grad()
def propagation(model: torch.nn.Module, data: D.Data, kind: str, level: float, n: int = 1000) -> list[float]:
    """For x_0 and every block n: ||x_n(noisy) - x_n(clean)|| / ||x_n(clean)|| over `n` test inputs
    (the quantity Prop. 2 bounds by h * D * W)."""
    index = torch.arange(min(n, len(data.test_y)), device=data.test_y.device)
    clean = model.features(corrupted_test_batch(data, index, kind, 0.0, 0))
    noisy = model.features(corrupted_test_batch(data, index, kind, level, 0))
    return [float((a - c).norm() / c.norm().clamp_min(1e-12)) for a, c in zip(noisy, clean)]


# ---------------------------------------------------------------------------------------------
# Over a store: evaluate every selected run, record the tables
# ---------------------------------------------------------------------------------------------


@dataclass
class TestNoise:
    """What `noise-eval --mode test-noise` measured: one row per (run, kind, level)."""

    results: list[dict] = field(default_factory=list)
    evaluated: int = 0
    specs: list[RunSpec] = field(default_factory=list)


def check_kinds(specs: list[RunSpec], kinds: list[str]) -> None:
    for spec in specs:
        allowed = NOISE_KINDS[spec.modality]
        for kind in kinds or [allowed[0]]:
            if kind not in allowed:
                raise SpecError(f"noise kind {kind!r} does not apply to {spec.modality} data; "
                                f"choose: {', '.join(allowed)}")


def evaluate_store(store: Store, rows: pd.DataFrame, levels: list[float], kinds: list[str], with_propagation: bool,
                   data_dir: Path, limit_test: int | None, device: str) -> TestNoise:
    """Evaluate the completed runs `rows` (from `store`) on corrupted test inputs; write noise_evals
    (and propagation) to the store. Runs whose checkpoint is missing are skipped with a warning."""
    specs = [spec_from_row(r) for r in rows.to_dict(orient="records")]
    check_kinds(specs, kinds)
    torch_device = resolve_device(device)
    datasets = load_checked(store, specs, data_dir, limit_test)
    out, cache = TestNoise(specs=specs), {}
    for spec in specs:
        key = data_key(spec.with_(limit_test=limit_test or spec.limit_test))
        if key not in cache:
            cache.clear()
            cache[key] = datasets[key].to(torch_device)
        data = cache[key]
        try:
            model = load_trained(spec, store.checkpoint_path(spec.run_id), data, torch_device)
        except FileNotFoundError:
            store.warn(f"skipping run {spec.run_id}: its checkpoint {store.checkpoint_path(spec.run_id)} "
                       f"is missing or unreadable")
            continue
        out.evaluated += 1
        _evaluate_run(store, spec, model, data, levels, kinds, with_propagation, out.results)
    return out


def load_checked(store: Store, specs: list[RunSpec], data_dir: Path, limit_test: int | None) -> dict[tuple, D.Data]:
    """The test data of every run (on the CPU), refused before anything is written when it is not
    the data a run was trained on (its fingerprint differs). Runs stored without a fingerprint (by
    an older robustres) cannot be checked: one warning for all of them."""
    datasets: dict[tuple, D.Data] = {}
    unchecked = 0
    for spec in specs:
        wanted = spec.with_(limit_test=limit_test or spec.limit_test)
        key = data_key(wanted)
        if key not in datasets:
            datasets[key] = D.load(wanted, data_dir)
        found = datasets[key].fingerprint
        if spec.data_fingerprint is None:
            unchecked += found is not None
        elif found != spec.data_fingerprint:
            raise DataError(f"{datasets[key].source} is not the data run {spec.run_id} was trained on "
                            f"(data fingerprint {found}, the run's {spec.data_fingerprint})")
    if unchecked:
        store.warn(f"{unchecked} run(s) were stored without a data fingerprint (by an older robustres): "
                   f"the data in {data_dir} is not checked against theirs")
    return datasets


def _evaluate_run(store: Store, spec: RunSpec, model, data: D.Data, levels: list[float], kinds: list[str],
                  with_propagation: bool, results: list[dict]) -> None:
    evals, props = [], []
    for kind in kinds or [NOISE_KINDS[spec.modality][0]]:
        for level in levels:
            acc = accuracy_under_noise(model, data, kind, level)
            evals.append({"kind": kind, "level": level, "accuracy": acc, "n_test": len(data.test_y)})
            results.append({"run_id": spec.run_id, "dataset": spec.dataset, "depth": spec.depth, "h": spec.h,
                            "seed": spec.seed, "kind": kind, "level": level, "accuracy": acc,
                            "n_test": len(data.test_y)})
            if with_propagation and level > 0:
                for block, value in enumerate(propagation(model, data, kind, level)):
                    props.append({"kind": kind, "level": level, "block": block, "value": value})
    store.put_noise_evals(spec.run_id, evals)
    if props:
        store.put_propagation(spec.run_id, props)


def moons_models(store: Store, runs: pd.DataFrame) -> list[tuple[int, str, list, D.Data]]:
    """Fig. 4's inputs: per depth and protocol (report's string: runs of another lr, optimizer, ...
    are never drawn together), the trained two-moons models of width 2 (first seed of each h)."""
    done = runs[(runs.dataset == "two-moons") & (runs.status == "completed") & (runs.width == 2)]
    if done.empty:
        return []
    full = store.runs().set_index("run_id")
    out = []
    protocol = done["protocol"] if "protocol" in done else pd.Series("", index=done.index)
    for (depth, name), g in done.assign(protocol=protocol).groupby(["depth", "protocol"]):
        chosen = g.sort_values("seed").groupby("h").head(1).sort_values("h")
        models, data = [], None
        for run_id in chosen.run_id:
            spec = spec_from_row({**full.loc[run_id].to_dict(), "run_id": run_id})
            data = data or D.load(spec, Path("."))
            try:
                models.append((spec.h, load_trained(spec, store.checkpoint_path(run_id), data, resolve_device("cpu"))))
            except FileNotFoundError:
                continue
        if models:
            out.append((int(depth), name, models, data))
    return out
