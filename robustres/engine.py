"""Training and evaluation of one run, with its data already on the device.

`train()` reads top to bottom: build the model from the run's seed, resume from the checkpoint if
one exists, then for each epoch draw the data order and augmentation from a generator seeded by
(seed, epoch) alone, step, evaluate, record and checkpoint atomically. Because every source of
randomness is re-derived from (seed, epoch), resuming after an interruption continues exactly as an
uninterrupted run would (bitwise on the CPU). The engine knows nothing of sweeps, stores or the CLI:
it is handed a checkpoint path and callbacks.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import data as D
from .models import count_flops, count_params, init_model
from .spec import RunSpec, SpecError

EVAL_BATCH = 1000


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    seconds: float


@dataclass
class Outcome:
    status: str  # completed | diverged
    history: list[EpochRecord] = field(default_factory=list)
    diverged_epoch: int | None = None
    diverged_step: int | None = None  # 1-based step within the diverged epoch
    seconds: float = 0.0

    @property
    def final_test_acc(self) -> float | None:
        return self.history[-1].test_acc if self.history and self.status == "completed" else None

    @property
    def best(self) -> EpochRecord | None:
        return max(self.history, key=lambda r: r.test_acc) if self.history else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {name} requested but CUDA is not available here; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(name)


def describe(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """Parameter count and forward multiply-adds per input of the run's model."""
    model = init_model(spec, num_classes, input_shape)
    dtype = torch.long if spec.modality == "text" else torch.float32
    example = torch.zeros((1, *input_shape), dtype=dtype)
    return {"params": count_params(model), "flops_per_image": count_flops(model, example)}


def lr_at(spec: RunSpec, epoch: int) -> float:
    """Step schedule: lr * gamma^(number of milestones passed); `epoch` is 0-based."""
    return spec.lr * spec.gamma ** sum(1 for m in spec.milestones if epoch >= m)


def stream_seed(seed: int, epoch: int, stream: str) -> int:
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def prepare(spec: RunSpec, data: D.Data, x: torch.Tensor, index: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Raw stored inputs -> model inputs. With a generator (training) augment and add noise."""
    training = g is not None
    if data.modality == "image":
        if training:
            x = D.crop_flip(x, g)
        x = D.to_float_images(x)
        if training and spec.train_noise > 0:
            x = D.gaussian_noise(x, spec.train_noise, g, clip=True)
        return D.normalize(x, data.mean, data.std)
    if data.modality == "text":
        if training and spec.train_noise > 0:
            x = D.char_swap(x, index, spec.train_noise, spec.seed)
        return x.long()
    if training and spec.train_noise > 0:
        x = D.gaussian_noise(x, spec.train_noise, g, clip=False)
    return x


@torch.no_grad()
def evaluate(spec: RunSpec, model: torch.nn.Module, data: D.Data) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), device=data.test_y.device)
    correct = torch.zeros((), device=data.test_y.device, dtype=torch.long)
    for start in range(0, len(data.test_y), EVAL_BATCH):
        index = torch.arange(start, min(start + EVAL_BATCH, len(data.test_y)), device=data.test_y.device)
        out = model(prepare(spec, data, data.test_x[index], index, None))
        y = data.test_y[index]
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    n = len(data.test_y)
    return loss_sum.item() / n, correct.item() / n


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # a damaged checkpoint means training from scratch, never a crash


def train(
    spec: RunSpec,
    data: D.Data,
    device: torch.device,
    checkpoint: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Train `spec` on `data` (already on `device`); resume from `checkpoint` when it holds a state."""
    model = init_model(spec, data.num_classes, data.input_shape).to(device)
    optimizer = make_optimizer(spec, model.parameters())
    outcome = Outcome(status="completed")

    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None and state.get("run_id") == spec.run_id:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        outcome.history = [EpochRecord(**r) for r in state["history"]]
        outcome.seconds = float(state["seconds"])

    n = len(data.train_y)
    steps = math.ceil(n / spec.batch_size)
    for epoch in range(len(outcome.history), spec.epochs):
        started = time.perf_counter()
        lr = lr_at(spec, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        g = torch.Generator(device=device).manual_seed(stream_seed(spec.seed, epoch, "train"))
        order = torch.randperm(n, generator=g, device=device)

        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        # First non-finite step, tracked on the device so the loop never waits for the GPU.
        bad_step = torch.full((), -1, device=device, dtype=torch.long)
        for step in range(steps):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
            x = prepare(spec, data, data.train_x[index], index, g)
            y = data.train_y[index]
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            correct += (out.argmax(1) == y).sum()
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step + 1, bad_step)
            if on_step is not None:
                on_step(step + 1, steps)

        if bad_step.item() >= 0 or not math.isfinite(loss_sum.item()):
            outcome.status = "diverged"
            outcome.diverged_epoch = epoch + 1
            outcome.diverged_step = int(bad_step.item()) if bad_step.item() >= 0 else steps
            outcome.seconds += time.perf_counter() - started
            return outcome

        test_loss, test_acc = evaluate(spec, model, data)
        seconds = time.perf_counter() - started
        record = EpochRecord(epoch + 1, loss_sum.item() / n, correct.item() / n, test_loss, test_acc, lr, seconds)
        outcome.history.append(record)
        outcome.seconds += seconds
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "run_id": spec.run_id,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": [asdict(r) for r in outcome.history],
                "seconds": outcome.seconds,
            })
        if on_epoch is not None:
            on_epoch(record)
    return outcome
