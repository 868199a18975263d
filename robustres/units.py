"""Units: some models of a pack as one network with one optimizer, and one training step of them.

A unit holds K models fused along the channel axis (grouped convolutions, per-model h; see
models.py and docs/train.md, "Packs: many runs, one network"), or a single model. Each model sees
its own minibatch, augmentation and noise (every random choice is a hash of seed, epoch and step,
see transforms.py) and gets the gradient of its own loss. A model whose loss turns non-finite is
masked out of the sum at once, on the device, and frozen by the host at the end of the epoch
(`freeze`). Each model keeps its own lr, momentum and weight decay (optimizers.py). On CUDA a step
is captured once as a CUDA graph and replayed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from . import data as D
from . import transforms as T
from .models import build_pack, learned_scales, split_state, stack_states, steps_per_epoch
from .optimizers import PackOptimizer, lr_at
from .spec import RunSpec

log = logging.getLogger("robustres")

EVAL_BATCH = 1000


@dataclass(frozen=True)
class Options:
    """How to execute a pack; none of this changes what a run computes beyond float rounding."""

    fuse: bool | None = None  # None: the rule of tuning.FUSE_RULES for this device and model family
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
    # Train only up to the end of this epoch (a search's rung), checkpoint there and stop; the run
    # resumes from that checkpoint when asked for more. None: to the schedule's end.
    stop_at: int | None = None


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        # No weight-cast cache: it must not outlive a captured graph, and each weight is cast once
        # per step anyway.
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


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
        self.scales = learned_scales(model)  # [K, 1, ...] each, one per block; empty unless h is learned
        self.optimizer = PackOptimizer(model.parameters(), self.specs, no_decay=self.scales)
        if states is not None:
            self.optimizer.load([s["optimizer"] for s in states])
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
        steps = steps_per_epoch(first, len(data.train_y))
        self.track_buf = torch.zeros((steps, len(self.tracked), 2, k), device=device) if self.tracked else None

    def set_lr(self, epoch: int) -> None:
        """Each model's own lr for this epoch (0-based) of the pack's shared schedule."""
        self.optimizer.set_lr([lr_at(spec, epoch) for spec in self.specs])

    def start_epoch(self) -> None:
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
            u = T.uniform(T.keyed_bits(self.seeds, T.STREAM_CROP, epoch, step, 3 * b)).view(k * b, 3)
            x = T.to_float_images(T.crop_flip(x.view(k * b, *shape), u)).view(k, b, *shape)
            if self.any_noise:
                x = T.corrupt_images(x, self.noise_kind, self.noise,
                                     lambda n: T.keyed_bits(self.seeds, T.STREAM_NOISE, epoch, step, n))
            x = T.normalize(x, data.mean, data.std)
            x = x.transpose(0, 1).reshape(b, k * shape[0], *shape[1:])
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.modality == "text":
            if self.any_noise:
                x = T.char_swap(x, idx, self.noise[:, None], self.seeds[:, None])
            return x.transpose(0, 1)  # [b, K, L]
        if self.any_noise:
            bits = T.keyed_bits(self.seeds, T.STREAM_NOISE, epoch, step, x[0].numel())
            x = T.gaussian_noise(x, self.noise, bits, clip=False)
        return x.transpose(0, 1).reshape(b, -1)

    def test_inputs(self, data: D.Data, index: torch.Tensor) -> torch.Tensor:
        """The same clean test batch for every model of the unit."""
        x = data.test_x[index]
        if self.modality == "image":
            x = T.normalize(T.to_float_images(x), data.mean, data.std).repeat(1, self.k, 1, 1)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.modality == "text":
            return x.unsqueeze(1).expand(-1, self.k, -1)
        return x.repeat(1, self.k)

    # -- one step -----------------------------------------------------------------------------

    def train_step(self, data: D.Data, order: torch.Tensor, epoch: int, step: int, batch_size: int) -> torch.Tensor:
        """One SGD step of every model of the unit; returns their losses [K] (on the device).

        On CUDA a full-size batch replays a captured graph of `_step` after a few eager warm-up
        steps; the graph is captured again when the frozen set changes (the learning rates are
        device tensors that the graph reads).
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
        key = (tuple(self.frozen), id(data))
        if self.graph is None or self.graph[0] != key:
            self.graph = None
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    losses = self._step(data, self.idx)
                self.graph = (key, graph, losses)
            except Exception as exc:  # capture is an optimisation: fall back to eager steps
                self.use_graphs = False
                log.warning("CUDA graph capture failed (%s: %s); training eagerly", type(exc).__name__, exc)
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
        self.optimizer.zero_grad()
        loss.backward()
        if self.frozen:
            for p in self.model.parameters():
                p.grad.unflatten(0, (self.k, -1)).index_fill_(0, self.frozen_t, 0)
        if self.tracked:
            stats = torch.stack([torch.stack([p.detach().reshape(self.k, -1).norm(dim=1),
                                              p.grad.reshape(self.k, -1).norm(dim=1)]) for _, p in self.tracked])
            self.track_buf.index_copy_(0, self.step_t.view(1), stats.unsqueeze(0))
        self.optimizer.step()
        self.loss_sum += torch.where(self.alive, losses.detach(), 0.0) * y.shape[0]
        self.correct += (out.argmax(2) == y).sum(0) * self.alive.long()
        return losses.detach()

    def freeze(self, positions: list[int]) -> None:
        """Zero and freeze diverged models' slices (parameters, buffers, optimizer state)."""
        with torch.no_grad():
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                if t.dim() > 0 and t.shape[0] % self.k == 0:  # unflatten: a view in any memory format
                    t.unflatten(0, (self.k, -1))[positions] = 0
        self.optimizer.freeze(positions)
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

    def scale_values(self, position: int) -> list[float]:
        """Model `position`'s learned scales now, block by block (empty unless h is learned)."""
        return torch.cat([s.detach()[position].reshape(1) for s in self.scales]).tolist() if self.scales else []

    def checkpoint_state(self, position: int) -> tuple[dict, dict]:
        model = split_state(self.model.state_dict(), position, self.k)
        return model, self.optimizer.state_for(position)


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


