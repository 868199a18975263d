"""Earlier versions of engine pieces, kept so benchmarks can measure old and new side by side."""

from __future__ import annotations

import contextlib

import torch

from robustres.models import StepScale


def unfolded_step(self: StepScale, x: torch.Tensor, norm, f: torch.Tensor) -> torch.Tensor:
    """The Euler step before h was folded into BN's affine map: x + h * norm(f), the product a pass
    of its own (and, under bf16 autocast, a float32 tensor of its own)."""
    return x.to(torch.promote_types(x.dtype, self.scale.dtype)) + self(norm(f))


@contextlib.contextmanager
def unfolded():
    """Every block built or run inside computes h * BN(F) as a separate product."""
    folded = StepScale.step
    StepScale.step = unfolded_step
    try:
        yield
    finally:
        StepScale.step = folded


def bf16_stream_step(self: StepScale, x: torch.Tensor, norm, f: torch.Tensor) -> torch.Tensor:
    """NOT a valid engine: the residual stream left in bf16 under autocast, which rounds updates
    h * F(x) below 2^-9 of x away (all of them at h = 0.001). Only to count what float32 costs."""
    if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
        return x + self(norm(f)).to(x.dtype)
    h = self.scale.view(-1)
    if norm.training:
        norm.num_batches_tracked.add_(1)
    return x + torch.nn.functional.batch_norm(f, norm.running_mean, norm.running_var, norm.weight * h,
                                              norm.bias * h, norm.training, norm.momentum, norm.eps)


@contextlib.contextmanager
def bf16_stream():
    folded = StepScale.step
    StepScale.step = bf16_stream_step
    try:
        yield
    finally:
        StepScale.step = folded
