"""Training of a pack: K runs of one architecture and schedule, trained together.

A pack is executed as one or more *units*. A unit is one network holding some of the pack's models
fused along the channel axis (grouped convolutions, per-model h, see models.py) with one optimizer;
`fuse=True` makes the whole pack one unit, `fuse=False` makes every model its own unit, stepped in
turn. Both compute the same thing: each model sees its own minibatch, its own augmentation and
noise, and gets the gradient of its own loss. Which one is faster depends on the device, so by
default it is measured (`choose_fuse`).

Every random choice is a hash of (seed, epoch, step, ...), see data.py, and every model is
initialised from its own seed; so a run trains identically alone or in any pack, and resuming from
an end-of-epoch checkpoint continues exactly as an uninterrupted run would (bitwise on the CPU).

A model whose loss becomes non-finite is *diverged*: its loss is masked out of the sum at once (on
the device, no synchronisation), and at the end of the epoch its slices are zeroed and frozen.
Nothing crosses between models, so its NaNs never reach its pack-mates.

The engine knows nothing of sweeps, stores or the CLI: it is handed checkpoint paths and callbacks.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from . import data as D
from .models import build_pack, count_flops, count_params, init_model, split_state, stack_states
from .spec import RunSpec, SpecError

EVAL_BATCH = 1000


@dataclass(frozen=True)
class Options:
    """How to execute a pack; none of this changes what a run computes beyond float rounding."""

    fuse: bool | None = None  # None: measure both ways on this device, take the faster
    channels_last: bool = True  # image models: NHWC activations (faster convolutions on CPU and GPU)
    compile: bool = False  # torch.compile the network (inside the CUDA graph on CUDA)
    # CUDA: capture the whole training step (data, forward, backward, update) as one CUDA graph
    # and replay it; a ResNet-110 step is ~2,000 small kernels whose launches otherwise dominate.
    cuda_graphs: bool = True
    # CUDA, models in turn: each unit steps on its own stream, so the small kernels of several
    # models run side by side on the GPU instead of one model at a time.
    streams: bool = True
    # Checkpoint at the end of an epoch when this many seconds passed since the last checkpoint,
    # and always after the last epoch. Epochs of minutes checkpoint every epoch; sub-second epochs
    # (two-moons) do not spend more time saving than training. 0: after every epoch.
    checkpoint_seconds: float = 10.0
    # Gradient dynamics (the paper's Fig. 2): weight layers to watch (1-based in forward order, or
    # "last"), recorded every step of the first epoch and every `track_every` steps after it.
    track_layers: tuple[str, ...] = ()
    track_every: int = 10


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
    layer_stats: list[dict] = field(default_factory=list)  # {step, layer, weight_norm, grad_norm}

    @property
    def final_test_acc(self) -> float | None:
        return self.history[-1].test_acc if self.history and self.status == "completed" else None

    @property
    def best(self) -> EpochRecord | None:
        return max(self.history, key=lambda r: r.test_acc) if self.history else None


# ---------------------------------------------------------------------------------------------
# Devices, descriptions, schedules
# ---------------------------------------------------------------------------------------------


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


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    params = list(params)
    if spec.optimizer == "adam":
        # capturable: Adam keeps its step count on the device, so a CUDA graph can replay it.
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, capturable=params[0].is_cuda)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        # No weight-cast cache: it must not outlive a captured graph, and each weight is cast once
        # per step anyway.
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Checkpoints: one per run, holding that run's model alone (never a pack's fused tensors)
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:  # through a file object, a full disk is an OSError (ENOSPC)
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint_bytes(path: Path, blob: bytes) -> None:
    """A checkpoint that was saved elsewhere (a Ray worker), written here atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path | None, run_id: str | None = None) -> dict | None:
    """The checkpoint at `path`, or None when there is none, it is damaged or it is another run's."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # a damaged checkpoint means training from scratch, never a crash
    if run_id is not None and state.get("run_id") != run_id:
        return None
    return state


def _split_optimizer(state: dict, k: int, count: int) -> dict:
    return {"state": {i: split_state(s, k, count) for i, s in state["state"].items()},
            "param_groups": state["param_groups"]}


def _stack_optimizers(states: list[dict]) -> dict:
    return {"state": {i: stack_states([s["state"][i] for s in states]) for i in states[0]["state"]},
            "param_groups": states[0]["param_groups"]}


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


def weight_layers(model: torch.nn.Module, wanted: Sequence[str]) -> list[tuple[int, torch.nn.Parameter]]:
    """(1-based layer number, weight) for the wanted layers among the weight layers (convolutions,
    linear maps, the embedding) in forward order; "last" is the classifier."""
    if not wanted:
        return []
    weights = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() >= 2]
    out = []
    for item in wanted:
        n = len(weights) if item == "last" else int(item)
        if not 1 <= n <= len(weights):
            raise ValueError(f"layer {item} does not exist: the model has {len(weights)} weight layers")
        out.append((n, weights[n - 1]))
    return out


class Unit:
    """Some members of a pack as one network with one optimizer, and their per-model counters."""

    def __init__(self, members: list[int], specs: Sequence[RunSpec], data: D.Data, device: torch.device,
                 options: Options, states: list[dict] | None = None):
        self.members = members
        self.specs = [specs[i] for i in members]
        first = self.specs[0]
        self.modality, self.precision = first.modality, first.precision
        model = build_pack(self.specs, data.num_classes, data.input_shape)
        if states is not None:
            model.load_state_dict(stack_states([s["model"] for s in states]))
        self.channels_last = options.channels_last and self.modality == "image" and device.type == "cuda"
        model = model.to(device, memory_format=torch.channels_last) if self.channels_last else model.to(device)
        self.model = model
        self.forward = torch.compile(model) if options.compile else model
        self.optimizer = make_optimizer(first, model.parameters())
        if states is not None and all(s["optimizer"]["state"] for s in states):
            self.optimizer.load_state_dict(_stack_optimizers([s["optimizer"] for s in states]))
        k = len(members)
        self.k = k
        self.index = torch.tensor(members, device=device)
        self.seeds = torch.tensor([s.seed for s in self.specs], device=device)
        self.noise = torch.tensor([s.train_noise for s in self.specs], device=device)
        self.any_noise = any(s.train_noise > 0 for s in self.specs)
        self.noise_kind = first.noise_kind  # the same for a whole pack (plan.pack_key)
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.frozen: list[int] = []  # positions in this unit whose divergence the host has seen
        # Per-epoch counters and the step's inputs live in fixed tensors, updated in place, so
        # that a captured CUDA graph reads and writes the same memory at every replay.
        self.loss_sum = torch.zeros(k, device=device)
        self.correct = torch.zeros(k, dtype=torch.long, device=device)
        self.bad_step = torch.full((k,), -1, dtype=torch.long, device=device)
        self.epoch_t = torch.zeros((), dtype=torch.long, device=device)
        self.step_t = torch.zeros((), dtype=torch.long, device=device)
        self.idx = torch.zeros((k, first.batch_size), dtype=torch.long, device=device)
        self.use_graphs = options.cuda_graphs and device.type == "cuda"
        self.graph: tuple | None = None  # (key, torch.cuda.CUDAGraph, static losses)
        self.eager_steps = 0
        # Layer statistics: the norms of every step go into a per-epoch device buffer (indexed by
        # the step tensor, so a captured graph fills it too); the host reads it once per epoch.
        self.tracked = weight_layers(model, options.track_layers)
        steps = math.ceil(len(data.train_y) / first.batch_size)
        self.track_buf = torch.zeros((steps, len(self.tracked), 2, k), device=device) if self.tracked else None

    def start_epoch(self, device: torch.device) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.bad_step.fill_(-1)

    # -- inputs -------------------------------------------------------------------------------

    def train_inputs(self, data: D.Data, idx: torch.Tensor, epoch, step) -> torch.Tensor:
        """idx [K, b] -> the unit's input, each model's own augmented, noisy batch."""
        k, b = idx.shape
        x = data.train_x[idx]  # [K, b, ...]
        if self.modality == "image":
            shape = x.shape[2:]
            u = D.uniform(D.keyed_bits(self.seeds, D.STREAM_CROP, epoch, step, 3 * b)).view(k * b, 3)
            x = D.to_float_images(D.crop_flip(x.view(k * b, *shape), u)).view(k, b, *shape)
            if self.any_noise:
                x = D.corrupt_images(x, self.noise_kind, self.noise,
                                     lambda n: D.keyed_bits(self.seeds, D.STREAM_NOISE, epoch, step, n))
            x = D.normalize(x, data.mean, data.std)
            x = x.transpose(0, 1).reshape(b, k * shape[0], *shape[1:])
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.modality == "text":
            if self.any_noise:
                x = D.char_swap(x, idx, self.noise[:, None], self.seeds[:, None])
            return x.transpose(0, 1)  # [b, K, L]
        if self.any_noise:
            bits = D.keyed_bits(self.seeds, D.STREAM_NOISE, epoch, step, x[0].numel())
            x = D.gaussian_noise(x, self.noise, bits, clip=False)
        return x.transpose(0, 1).reshape(b, -1)

    def test_inputs(self, data: D.Data, index: torch.Tensor) -> torch.Tensor:
        """The same clean test batch for every model of the unit."""
        x = data.test_x[index]
        if self.modality == "image":
            x = D.normalize(D.to_float_images(x), data.mean, data.std).repeat(1, self.k, 1, 1)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.modality == "text":
            return x.unsqueeze(1).expand(-1, self.k, -1)
        return x.repeat(1, self.k)

    # -- one step -----------------------------------------------------------------------------

    def train_step(self, data: D.Data, order: torch.Tensor, epoch: int, step: int, batch_size: int) -> torch.Tensor:
        """One SGD step of every model of the unit; returns their losses [K] (on the device).

        On CUDA a full-size batch replays a captured graph of `_step` after a few eager warm-up
        steps; the graph is captured again when the learning rate or the frozen set changes.
        """
        idx = order[self.index, step * batch_size:(step + 1) * batch_size]  # [K, b]
        self.epoch_t.fill_(epoch)
        self.step_t.fill_(step)
        if not self.use_graphs or idx.shape[1] != self.idx.shape[1]:
            return self._step(data, idx).clone()
        self.idx.copy_(idx)
        if self.eager_steps < 3:  # warm-up: cuDNN picks its algorithms, momentum buffers appear
            self.eager_steps += 1
            return self._step(data, self.idx).clone()
        key = (self.optimizer.param_groups[0]["lr"], tuple(self.frozen), id(data))
        if self.graph is None or self.graph[0] != key:
            self.graph = None
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    losses = self._step(data, self.idx)
                self.graph = (key, graph, losses)
            except Exception as exc:  # capture is an optimisation: fall back to eager steps
                self.use_graphs = False
                print(f"warning: CUDA graph capture failed ({type(exc).__name__}: {exc}); training eagerly")
                return self._step(data, self.idx).clone()
        self.graph[1].replay()
        return self.graph[2].clone()

    def _step(self, data: D.Data, idx: torch.Tensor) -> torch.Tensor:
        x = self.train_inputs(data, idx, self.epoch_t, self.step_t)
        y = data.train_y[idx].t()  # [b, K]
        with autocast(x.device, self.precision):
            out = self.forward(x)  # [b, K, classes]
        losses = F.cross_entropy(out.float().permute(0, 2, 1), y, reduction="none").mean(0)  # [K]
        finite = torch.isfinite(losses)
        self.bad_step.copy_(torch.where(self.alive & ~finite & (self.bad_step < 0), self.step_t + 1, self.bad_step))
        self.alive &= finite
        # Only the living contribute; where() (not a product) keeps a NaN loss out of the sum.
        loss = torch.where(self.alive, losses, torch.zeros_like(losses)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.frozen:
            for p in self.model.parameters():
                p.grad.view(self.k, -1).index_fill_(0, self.frozen_t, 0)
        if self.tracked:
            stats = torch.stack([torch.stack([p.detach().view(self.k, -1).norm(dim=1),
                                              p.grad.view(self.k, -1).norm(dim=1)]) for _, p in self.tracked])
            self.track_buf.index_copy_(0, self.step_t.view(1), stats.unsqueeze(0))
        self.optimizer.step()
        self.loss_sum += torch.where(self.alive, losses.detach(), 0.0) * y.shape[0]
        self.correct += (out.argmax(2) == y).sum(0) * self.alive.long()
        return losses.detach()

    def freeze(self, positions: list[int]) -> None:
        """Zero and freeze diverged models' slices (parameters, buffers, optimizer state)."""
        with torch.no_grad():
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                if t.dim() > 0 and t.shape[0] % self.k == 0:
                    t.view(self.k, -1)[positions] = 0
            for state in self.optimizer.state.values():
                for t in state.values():
                    if torch.is_tensor(t) and t.dim() > 0:
                        t.view(self.k, -1)[positions] = 0
        self.frozen = sorted(set(self.frozen) | set(positions))
        self.frozen_t = torch.tensor(self.frozen, device=self.alive.device)

    @torch.no_grad()
    def evaluate(self, data: D.Data) -> tuple[list[float], list[float]]:
        self.model.eval()
        device = data.test_y.device
        loss_sum = torch.zeros(self.k, device=device)
        correct = torch.zeros(self.k, dtype=torch.long, device=device)
        n = len(data.test_y)
        for start in range(0, n, EVAL_BATCH):
            index = torch.arange(start, min(start + EVAL_BATCH, n), device=device)
            with autocast(device, self.precision):
                out = self.forward(self.test_inputs(data, index))
            y = data.test_y[index].unsqueeze(1).expand(-1, self.k)
            loss_sum += F.cross_entropy(out.float().permute(0, 2, 1), y, reduction="none").sum(0)
            correct += (out.argmax(2) == y).sum(0)
        self.model.train()
        return (loss_sum / n).tolist(), (correct.double() / n).tolist()

    def checkpoint_state(self, position: int) -> tuple[dict, dict]:
        model = split_state(self.model.state_dict(), position, self.k)
        optimizer = _split_optimizer(self.optimizer.state_dict(), position, self.k)
        return model, optimizer


def step_all(units: list[Unit], data: D.Data, order: torch.Tensor, epoch: int, step: int, batch_size: int,
             streams: list | None = None) -> None:
    """One step of every unit that still has a living model; on side streams when given."""
    live = [u for u in units if len(u.frozen) < u.k]
    if not streams or len(live) < 2:
        for unit in live:
            unit.train_step(data, order, epoch, step, batch_size)
        return
    main = torch.cuda.current_stream()
    for unit, stream in zip(live, streams):
        stream.wait_stream(main)
        with torch.cuda.stream(stream):
            unit.train_step(data, order, epoch, step, batch_size)
    for stream in streams[:len(live)]:
        main.wait_stream(stream)


def make_streams(units: list[Unit], device: torch.device, options: Options) -> list | None:
    if device.type != "cuda" or not options.streams or len(units) < 2:
        return None
    return [torch.cuda.Stream(device) for _ in units]


# ---------------------------------------------------------------------------------------------
# Choosing fused or in-turn execution, by measurement
# ---------------------------------------------------------------------------------------------

_FUSE_CHOICE: dict[tuple, bool] = {}


def _time_steps(units: list[Unit], data: D.Data, batch_size: int, steps: int = 3,
                options: Options = Options()) -> float:
    order = D.order(units[0].seeds.new_tensor([s.seed for u in units for s in u.specs]), 0, len(data.train_y))
    streams = make_streams(units, order.device, options)
    for unit in units:
        unit.start_epoch(order.device)
    sync = torch.cuda.synchronize if order.device.type == "cuda" else (lambda: None)
    warm = 5 if order.device.type == "cuda" else 1  # on CUDA: 3 eager steps, the capture, a replay
    per_epoch = max(1, len(data.train_y) // batch_size)
    for i in range(steps + warm):
        if i == warm:
            sync()
            started = time.perf_counter()
        step_all(units, data, order, 0, i % per_epoch, batch_size, streams)
    sync()
    return (time.perf_counter() - started) / steps


def choose_fuse(specs: Sequence[RunSpec], data: D.Data, device: torch.device, options: Options) -> bool:
    """True when one fused network steps the pack faster than its models in turn, on this device."""
    if options.fuse is not None:
        return options.fuse
    if len(specs) == 1:
        return True
    first = specs[0]
    key = (str(device), first.model, first.depth, first.width, first.hidden, first.bn, first.batch_size,
           first.precision, len(specs), data.input_shape, options.channels_last, options.compile)
    if key not in _FUSE_CHOICE:
        # Measured on at most 4 models and 3 steps each way: a proxy that costs seconds, not minutes.
        probe = list(specs[:4])
        n = len(data.train_y)
        steps = max(1, min(3, n // first.batch_size))
        fused = _time_steps([Unit(list(range(len(probe))), probe, data, device, options)], data,
                            first.batch_size, steps, options)
        alone = _time_steps([Unit([i], probe, data, device, options) for i in range(len(probe))], data,
                            first.batch_size, steps, options)
        _FUSE_CHOICE[key] = fused <= alone
    return _FUSE_CHOICE[key]


# ---------------------------------------------------------------------------------------------
# How many models fit on the device
# ---------------------------------------------------------------------------------------------

MAX_PACK = 64


def _peak_bytes_of_a_step(specs: Sequence[RunSpec], data: D.Data, device: torch.device, options: Options) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    unit = Unit(list(range(len(specs))), specs, data, device, Options(fuse=True, channels_last=options.channels_last))
    order = D.order(unit.seeds, 0, len(data.train_y))
    unit.start_epoch(device)
    unit.train_step(data, order, 0, 0, specs[0].batch_size)
    unit.train_step(data, order, 0, 1 % max(1, len(data.train_y) // specs[0].batch_size), specs[0].batch_size)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del unit, order
    torch.cuda.empty_cache()
    return peak


def _activation_bytes_per_input(spec: RunSpec, data: D.Data) -> int:
    """Bytes of every layer output for one input: what backward keeps, roughly, per sample."""
    model = init_model(spec, data.num_classes, data.input_shape)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if torch.is_tensor(output):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    dtype = torch.long if spec.modality == "text" else torch.float32
    with torch.no_grad():
        model(torch.zeros((2, *data.input_shape), dtype=dtype))
    for handle in handles:
        handle.remove()
    return total // 2 + count_params(model) * 4 * 4 // max(1, spec.batch_size)


def _available_host_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def auto_pack_size(specs: Sequence[RunSpec], data: D.Data, device: torch.device, options: Options) -> int:
    """The most models of this kind that fit in free device memory, with a 20 % safety margin.

    On CUDA this is measured: the peak memory of real training steps with packs of 1 and 2 gives
    the cost of one more model. On the CPU it is estimated from the layer outputs of one input.
    """
    n = len(specs)
    if n == 1:
        return 1
    if device.type == "cuda":
        one = _peak_bytes_of_a_step(specs[:1], data, device, options)
        two = _peak_bytes_of_a_step(specs[:2], data, device, options)
        per_model = max(two - one, 1)
        free, _ = torch.cuda.mem_get_info(device)
        fits = int((0.8 * free - (one - per_model)) // per_model)
    else:
        per_model = _activation_bytes_per_input(specs[0], data) * specs[0].batch_size * 2
        fits = int(0.5 * _available_host_bytes() // max(per_model, 1))
    return max(1, min(n, fits, MAX_PACK))


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def train(
    specs: Sequence[RunSpec],
    data: D.Data,
    device: torch.device,
    checkpoints: Sequence[Path | None] | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    options: Options = Options(),
) -> list[Outcome]:
    """Train a pack of runs on `data` (already on `device`); one Outcome per run, in order.

    The runs must share everything but h, seed and training noise, and their checkpoints (if any)
    must be at the same epoch: resume works per pack.
    """
    specs = list(specs)
    first = specs[0]
    if device.type == "cuda":
        # fp32 means fp32: no TF32 inside "float32" convolutions and matmuls. bf16 is --precision bf16.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * len(specs)
    saved = [load_checkpoint(path, spec.run_id) for spec, path in zip(specs, checkpoints)]
    done = {len(s["history"]) if s else 0 for s in saved}
    if len(done) > 1:
        raise ValueError(f"a pack resumes together: its runs' checkpoints are at epochs {sorted(done)}")
    start_epoch = done.pop()
    states = saved if start_epoch > 0 else None

    outcomes = [Outcome(status="completed") for _ in specs]
    if states is not None:
        for outcome, state in zip(outcomes, states):
            outcome.history = [EpochRecord(**r) for r in state["history"]]
            outcome.seconds = float(state["seconds"])
            outcome.layer_stats = list(state.get("layer_stats", []))

    # A resumed pack goes on the way it started: fused and in turn differ by float rounding, and
    # timing them again could choose the other way on a busier machine.
    recorded = {s.get("fused") for s in states} if states is not None else {None}
    if options.fuse is None and len(recorded) == 1 and None not in recorded:
        fuse = recorded.pop()
    else:
        fuse = choose_fuse(specs, data, device, options)
    groups = [list(range(len(specs)))] if fuse else [[i] for i in range(len(specs))]
    units = [Unit(g, specs, data, device, options, [states[i] for i in g] if states else None) for g in groups]
    streams = make_streams(units, device, options)
    seeds = torch.tensor([s.seed for s in specs], device=device)
    n = len(data.train_y)
    steps = math.ceil(n / first.batch_size)
    dead: set[int] = set()
    last_save = time.perf_counter()

    for epoch in range(start_epoch, first.epochs):
        started = time.perf_counter()
        lr = lr_at(first, epoch)
        order = D.order(seeds, epoch, n)  # [K, n]: each run's own data order
        for unit in units:
            for group in unit.optimizer.param_groups:
                group["lr"] = lr
            unit.start_epoch(device)
        for step in range(steps):
            step_all(units, data, order, epoch, step, first.batch_size, streams)
            if on_step is not None:
                on_step(step + 1, steps)

        train_seconds = time.perf_counter() - started
        for unit in units:
            if unit.tracked:
                buf = unit.track_buf.cpu()  # [steps, layers, 2, K]
                for step in range(steps):
                    if epoch > 0 and step % options.track_every:
                        continue
                    for li, (layer, _) in enumerate(unit.tracked):
                        for j, i in enumerate(unit.members):
                            if i in dead:
                                continue
                            outcomes[i].layer_stats.append({
                                "step": epoch * steps + step + 1, "layer": layer,
                                "weight_norm": float(buf[step, li, 0, j]), "grad_norm": float(buf[step, li, 1, j])})
            alive = unit.alive.tolist()
            newly_dead = [j for j, ok in enumerate(alive) if not ok and j not in unit.frozen]
            for j in newly_dead:
                i = unit.members[j]
                outcomes[i].status = "diverged"
                outcomes[i].diverged_epoch = epoch + 1
                outcomes[i].diverged_step = int(unit.bad_step[j].item())
                outcomes[i].seconds += train_seconds / len(specs)
                dead.add(i)
            if newly_dead:
                unit.freeze(newly_dead)
        if len(dead) == len(specs):
            break

        save = epoch + 1 == first.epochs or time.perf_counter() - last_save >= options.checkpoint_seconds
        for unit in units:
            test_loss, test_acc = unit.evaluate(data)
            train_loss = (unit.loss_sum / n).tolist()
            train_acc = (unit.correct.double() / n).tolist()
            for j, i in enumerate(unit.members):
                if i in dead:
                    continue
                seconds = (time.perf_counter() - started) / len(specs)  # a pack's time, shared out
                record = EpochRecord(epoch + 1, train_loss[j], train_acc[j], test_loss[j], test_acc[j], lr, seconds)
                outcomes[i].history.append(record)
                outcomes[i].seconds += seconds
                if save and checkpoints[i] is not None:
                    model_state, optimizer_state = unit.checkpoint_state(j)
                    save_checkpoint(checkpoints[i], {
                        "run_id": specs[i].run_id,
                        "model": model_state,
                        "optimizer": optimizer_state,
                        "history": [asdict(r) for r in outcomes[i].history],
                        "seconds": outcomes[i].seconds,
                        "layer_stats": outcomes[i].layer_stats,
                        "fused": fuse,
                    })
        if save:
            last_save = time.perf_counter()
        if on_epoch is not None:
            for i, outcome in enumerate(outcomes):
                if i not in dead:
                    on_epoch(i, outcome.history[-1], save)
    return outcomes



# ---------------------------------------------------------------------------------------------
# Robustness instruments: accuracy on corrupted test inputs, and noise propagation through blocks
# ---------------------------------------------------------------------------------------------

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
        x = D.to_float_images(x).unsqueeze(0)
        if level > 0:
            lv = torch.tensor([level], device=x.device)
            x = D.corrupt_images(x, kind, lv, lambda n: D.keyed_bits(seed, D.STREAM_TEST_NOISE, 0, batch, n))
        return D.normalize(x[0], data.mean, data.std)
    if data.modality == "text":
        if level > 0:
            x = D.char_swap(x, index, torch.full((len(index),), level, device=x.device),
                            torch.full((len(index),), TEST_NOISE_SEED, device=x.device))
        return x.long()
    if level > 0:
        bits = D.keyed_bits(seed, D.STREAM_TEST_NOISE, 0, batch, x.numel())
        x = D.gaussian_noise(x.unsqueeze(0), torch.tensor([level], device=x.device), bits, clip=False)[0]
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
