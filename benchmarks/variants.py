"""Earlier or hypothetical versions of engine pieces, so benchmarks can measure them side by side."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from robustres.models import StepScale


def unfolded_step(self: StepScale, x: torch.Tensor, norm, f: torch.Tensor) -> torch.Tensor:
    """The Euler step before h was folded into BN's affine map: x + h * norm(f), the product a pass
    of its own (and, under bf16 autocast, a float32 tensor of its own)."""
    return x.to(torch.promote_types(x.dtype, self.scale.dtype)) + self(norm(f))


def bf16_stream_step(self: StepScale, x: torch.Tensor, norm, f: torch.Tensor) -> torch.Tensor:
    """NOT a valid engine: the residual stream left in bf16 under autocast, which rounds updates
    h * F(x) below 2^-9 of x away (all of them at h = 0.001). Only to count what float32 costs."""
    if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
        return x + self(norm(f)).to(x.dtype)
    h = self.scale.view(-1)
    if norm.training:
        norm.num_batches_tracked.add_(1)
    return x + F.batch_norm(f, norm.running_mean, norm.running_var, norm.weight * h, norm.bias * h,
                            norm.training, norm.momentum, norm.eps)


@contextlib.contextmanager
def _blocks_stepping_with(step):
    """Every block run inside computes its Euler step with `step` instead of StepScale.step."""
    current = StepScale.step
    StepScale.step = step
    try:
        yield
    finally:
        StepScale.step = current


def unfolded():
    return _blocks_stepping_with(unfolded_step)


def bf16_stream():
    return _blocks_stepping_with(bf16_stream_step)
