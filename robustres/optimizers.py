"""SGD and Adam over a unit's fused parameters, each model with its own lr, momentum and weight decay.

Every parameter of a fused network holds its K models stacked along dim 0 in equal chunks
(models.py), so `p.unflatten(0, (K, -1))` puts the models on a leading axis of their own (a view,
whatever the memory format), and a hyperparameter of shape [K] viewed as [K, 1, ..., 1] broadcasts
over it. The step is torch's arithmetic with such per-model tensors, over all parameters at once
(torch._foreach_* ops; nothing loops over models):

    SGD   d = g + wd * w;  buf = mu * buf + d;  w -= lr * buf
          (torch.optim.SGD without dampening or Nesterov: its first step sets buf = d, which
          mu * 0 + d is; momentum 0 makes buf = d)
    Adam  d = g + wd * w;  m = lerp(m, d, 1 - b1);  v = b2 * v + (1 - b2) * d * d;  t += 1
          w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
          (torch.optim.Adam with L2 weight decay, no amsgrad; on the CPU the same operations in
          the same order, so a model alone steps bitwise as torch.optim.Adam would)

The learning rates are a device tensor changed in place once per epoch (`set_lr`), and Adam's step
counts and bias corrections are device tensors too: a captured CUDA graph reads the current values
at every replay. The schedule (milestones, gamma) is shared by a pack, each model's lr is its own
initial lr times it (`lr_at`).

Checkpoints stay torch's format, per model: `state_for(k)` is what torch.optim.SGD or Adam's
`state_dict()` holds for model k alone (momentum buffers, or exp_avg, exp_avg_sq and a 0-d step,
and one param group with the run's own hyperparameters, plus one without weight decay for learned
step scales when the model has them), which is also what checkpoints written by
torch's optimizers hold, split per model; `load` takes a list of those.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .spec import RunSpec

BETAS = (0.9, 0.999)  # Adam's, torch's defaults (the paper's code uses them)
EPS = 1e-8


def lr_at(spec: RunSpec, epoch: int) -> float:
    """Step schedule: lr * gamma^(number of milestones passed); `epoch` is 0-based."""
    return spec.lr * spec.gamma ** sum(1 for m in spec.milestones if epoch >= m)


def torch_group(spec: RunSpec, lr: float, capturable: bool) -> dict:
    """The param group torch's own optimizer of this run would hold (its keys are torch's)."""
    dummy = [torch.zeros(1)]
    if spec.optimizer == "adam":
        made = torch.optim.Adam(dummy, lr=lr, betas=BETAS, eps=EPS, weight_decay=spec.weight_decay,
                                capturable=capturable)
    else:
        made = torch.optim.SGD(dummy, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return {key: value for key, value in made.param_groups[0].items() if key != "params"}


class PackOptimizer:
    """One optimizer for K fused models whose lr, momentum and weight decay may all differ."""

    def __init__(self, params, specs: Sequence[RunSpec], no_decay: Sequence[torch.Tensor] = ()):
        """`no_decay`: parameters that never get weight decay (learned step scales: decaying them
        would pull every block's h towards 0, a rule of its own)."""
        self.params = list(params)
        self.specs = list(specs)
        self.kind = specs[0].optimizer
        if any(s.optimizer != self.kind for s in specs):
            raise ValueError("a pack shares its optimizer (plan.pack_key)")
        k = self.k = len(specs)
        if any(p.dim() == 0 or p.shape[0] % k for p in self.params):
            raise ValueError(f"every parameter must stack {k} models along dim 0")
        first = self.params[0]
        device, dtype = first.device, first.dtype

        def per_model(values, kind=dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=kind, device=device)

        # lr in float64 too: Adam divides it by its bias correction in double, as torch does.
        self.lr64 = per_model([s.lr for s in specs], torch.float64)
        self.lr = per_model([s.lr for s in specs])
        momentum, decay = per_model([s.momentum for s in specs]), per_model([s.weight_decay for s in specs])
        self.decays = any(s.weight_decay != 0 for s in specs)  # all 0: skip the term, as torch does
        self.w = [p.detach().unflatten(0, (k, -1)) for p in self.params]  # [K, ...] views

        def views(t: torch.Tensor) -> list[torch.Tensor]:
            """t [K] as one broadcastable view per parameter (views: in-place changes show)."""
            return [t.view(k, *[1] * (w.dim() - 1)) for w in self.w]

        self.lr_v, self.decay_v = views(self.lr), views(decay)
        exempt = {id(p) for p in no_decay}
        self.decayed = [id(p) not in exempt for p in self.params]
        zero = torch.zeros_like(decay)  # g + w * 0 is g exactly: no decay, inside the same foreach call
        self.decay_v = [v if keep else zero.view(v.shape) for v, keep in zip(self.decay_v, self.decayed)]
        if self.kind == "adam":
            self.steps = per_model([0.0] * k, torch.float32)  # torch keeps Adam's step as float32
            self.step_size, self.bc2_sqrt = per_model([0.0] * k), per_model([1.0] * k)
            self.step_size_v, self.bc2_sqrt_v = views(self.step_size), views(self.bc2_sqrt)
            self.exp_avg = [torch.zeros_like(w) for w in self.w]
            self.exp_avg_sq = [torch.zeros_like(w) for w in self.w]
        else:
            self.has_momentum = any(s.momentum != 0 for s in specs)
            self.momentum_v = views(momentum)
            self.buf = [torch.zeros_like(w) for w in self.w] if self.has_momentum else []

    # -- the step -----------------------------------------------------------------------------

    def set_lr(self, lrs: Sequence[float]) -> None:
        """Each model's lr for the epoch, in place (float64 on the host, rounded as torch rounds)."""
        values = torch.tensor(list(lrs), dtype=torch.float64)
        self.lr64.copy_(values)
        self.lr.copy_(values)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad.unflatten(0, (self.k, -1)) for p in self.params]
        if self.decays:
            grads = torch._foreach_addcmul(grads, self.w, self.decay_v)  # g + w * wd
        if self.kind == "adam":
            self.adam(grads)
            return
        if self.has_momentum:
            torch._foreach_mul_(self.buf, self.momentum_v)
            torch._foreach_add_(self.buf, grads)
            grads = self.buf
        torch._foreach_addcmul_(self.w, grads, self.lr_v, value=-1)  # w - buf * lr

    def adam(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = BETAS
        self.steps += 1
        t = self.steps.double()
        self.step_size.copy_(self.lr64 / (1 - torch.pow(beta1, t)))
        self.bc2_sqrt.copy_((1 - torch.pow(beta2, t)).sqrt())
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, self.bc2_sqrt_v)
        torch._foreach_add_(denom, EPS)
        update = torch._foreach_mul(self.exp_avg, self.step_size_v)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(self.w, update)

    # -- per-model state ----------------------------------------------------------------------

    def tensors(self) -> dict[str, list[torch.Tensor]]:
        """The state per parameter, by torch's names ([K, ...] each)."""
        if self.kind == "adam":
            return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}
        return {"momentum_buffer": self.buf}

    @torch.no_grad()
    def freeze(self, positions: list[int]) -> None:
        """Zero these models' state: with their gradients and weights zero, their steps are 0."""
        for state in self.tensors().values():
            for t in state:
                t[positions] = 0

    def state_for(self, position: int) -> dict:
        """Model `position`'s state as torch's optimizer of that model alone would save it."""
        spec = self.specs[position]
        state: dict[int, dict] = {}
        if self.kind == "adam":
            step = torch.tensor(float(self.steps[position]))
            state = {i: {"step": step.clone(), "exp_avg": self.exp_avg[i][position].clone(),
                         "exp_avg_sq": self.exp_avg_sq[i][position].clone()} for i in range(len(self.w))}
        elif spec.momentum != 0:
            state = {i: {"momentum_buffer": buf[position].clone()} for i, buf in enumerate(self.buf)}
        group = torch_group(spec, float(self.lr64[position]), self.params[0].is_cuda)
        groups = [{**group, "params": [i for i, keep in enumerate(self.decayed) if keep]}]
        if not all(self.decayed):  # torch's way to exempt parameters: a group of their own
            groups.append({**group, "weight_decay": 0.0,
                           "params": [i for i, keep in enumerate(self.decayed) if not keep]})
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load(self, states: Sequence[dict]) -> None:
        """Each model's saved state (torch's format, see `state_for`); an empty one is a fresh start
        (zero buffers: SGD's first step then sets buf = d, as torch's does)."""
        for position, saved in enumerate(states):
            entries = saved["state"]
            if not entries:
                continue
            if len(entries) != len(self.w):
                raise ValueError(f"optimizer state for {len(entries)} parameters, the model has {len(self.w)}")
            for i, entry in enumerate(entries[j] for j in sorted(entries)):
                for name, mine in self.tensors().items():
                    if entry.get(name) is not None and mine:
                        mine[i][position].copy_(entry[name])
                if self.kind == "adam":
                    self.steps[position] = float(entry["step"])
