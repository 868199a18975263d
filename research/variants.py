"""Earlier or hypothetical versions of engine pieces, so benchmarks can measure them side by side."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustres.models import ImageBlock, StepScale


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


@contextlib.contextmanager
def triton_blocks(**config):
    """Every CIFAR block run inside that can (training, batch norm, identity shortcut, stride 1, on a
    GPU or in Triton's interpreter) runs forward and backward in research/fused_block.py's kernels;
    `config` goes to them (block_m, num_warps, ...). Each block hands the next one the copy of its
    output that the convolutions read, made in the same pass, as an attribute of the output."""
    from research import fused_block as fb  # triton, imported only when used

    own = ImageBlock.forward

    def forward(self: ImageBlock, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and isinstance(self.shortcut, nn.Identity) and isinstance(self.bn1, nn.BatchNorm2d)
                and self.conv1.stride == (1, 1) and (x.is_cuda or fb.INTERPRETED)):
            return own(self, x)
        xb = getattr(x, "convolution_copy", None)
        if xb is None:
            xb = x.detach().to(fb.ACTIVATIONS)
        x1, x1b = fb.fused_block(x.float(), xb, self.conv1.weight, self.conv2.weight, self.bn1.weight, self.bn1.bias,
                                 self.bn2.weight, self.bn2.bias, self.h.scale.view(-1).contiguous(),
                                 self.conv1.groups, norms=(self.bn1, self.bn2), **config)
        x1.convolution_copy = x1b
        return x1

    ImageBlock.forward = forward
    try:
        yield
    finally:
        ImageBlock.forward = own
