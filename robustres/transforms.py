"""Batched transforms on the training device: data order, crop and flip, normalisation, and the
training and test corruptions (gaussian, salt-and-pepper, mosaic, char-swap). Every random choice
is a keyed hash, never a generator's state."""

from __future__ import annotations

import math

import torch

# Every random choice of training (data order, crop, flip, noise) is a hash of (the run's seed, a
# stream name, epoch, step, position): the same numbers whichever pack a run trains in and however
# the pack is executed, on any device, with no generator state to carry or checkpoint.
STREAM_ORDER, STREAM_CROP, STREAM_NOISE, STREAM_TEXT, STREAM_TEST_NOISE = 1, 2, 3, 4, 5


def _mix(v: torch.Tensor) -> torch.Tensor:
    """A splitmix64-style integer hash on int64 tensors (wrapping arithmetic)."""
    v = v ^ (v >> 31)
    v = v * -4658895280553007687  # 0xBF58476D1CE4E5B9 as a signed int64
    v = v ^ (v >> 27)
    v = v * -7723592293110705685  # 0x94D049BB133111EB
    return v ^ (v >> 31)


def keyed_bits(seeds: torch.Tensor, stream: int, epoch: int | torch.Tensor, step: int | torch.Tensor,
               n: int) -> torch.Tensor:
    """[K, n] random int64 words for K runs' seeds, a function of (seed, stream, epoch, step, i).

    epoch and step may be 0-d int64 device tensors (so a captured CUDA graph can advance them).
    """
    base = _mix(seeds.long() * 1_000_003 + (epoch + stream * 1_000_033) * 998_244_353 + step)
    return _mix(base[:, None] + torch.arange(n, device=seeds.device) * -7046029254386353131)  # 0x9E3779B97F4A7C15


def uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 words -> float32 uniform in [0, 1), from 24 of their bits."""
    return ((bits >> 20) & ((1 << 24) - 1)).float() * (1.0 / (1 << 24))


def normal(bits: torch.Tensor) -> torch.Tensor:
    """int64 words -> standard normal float32 (Box-Muller on two 24-bit halves of each word)."""
    u1 = (((bits >> 8) & ((1 << 24) - 1)).float() + 1) * (1.0 / (1 << 24))  # (0, 1]: log is finite
    u2 = ((bits >> 36) & ((1 << 24) - 1)).float() * (1.0 / (1 << 24))
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def order(seeds: torch.Tensor, epoch: int, n: int) -> torch.Tensor:
    """[K, n]: each run's own permutation of the training set for this epoch."""
    return torch.argsort(keyed_bits(seeds, STREAM_ORDER, epoch, 0, n), dim=1, stable=True)


def crop_flip(x: torch.Tensor, u: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Pad-`pad` random crop and random horizontal flip, per sample, as one gather.

    x: [N, C, H, W]; u: [N, 3] uniforms choosing the row offset, column offset and flip. Padding is
    zero (black), as torchvision's RandomCrop pads the raw image before normalisation.
    """
    b, c, hgt, wid = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = (u[:, 0:1] * (2 * pad + 1)).long()
    dx = (u[:, 1:2] * (2 * pad + 1)).long()
    flip = u[:, 2:3] < 0.5
    cols = torch.arange(wid, device=x.device).expand(b, wid)
    cols = torch.where(flip, wid - 1 - cols, cols) + dx
    rows = torch.arange(hgt, device=x.device).expand(b, hgt) + dy
    batch = torch.arange(b, device=x.device)[:, None, None]
    # [B, H, W, C] from advanced indexing, back to [B, C, H, W].
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    shape = (1,) * (x.dim() - 3) + (-1, 1, 1)
    return (x - mean.view(shape)) / std.view(shape)


def gaussian_noise(x: torch.Tensor, level: torch.Tensor, bits: torch.Tensor, clip: bool) -> torch.Tensor:
    """x [K, ...] plus level[k] * N(0, 1) noise from `bits` (same shape as x); clipped to [0, 1]."""
    level = level.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    noisy = x + level * normal(bits).view(x.shape)
    return noisy.clamp_(0, 1) if clip else noisy


def salt_pepper(x: torch.Tensor, level: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """x [K, B, C, H, W] in [0, 1]: a `level` fraction of each model's pixels (all channels) set to
    0 or 1 at random; bits: [K, B*H*W] random words."""
    k, b, c, hgt, wid = x.shape
    bits = bits.view(k, b, 1, hgt, wid)
    hit = uniform(bits) < level.view(k, 1, 1, 1, 1).to(torch.float32)
    value = ((bits >> 50) & 1).to(x.dtype)
    return torch.where(hit, value, x)


def mosaic_block(level: float) -> int:
    """Pixelation block size: 1 (none) at level 0, growing to 8 pixels at level 1."""
    return 1 + round(7 * float(level))


def mosaic(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """x [K, B, C, H, W]: each model's images averaged over blocks whose size grows with its level."""
    out = x.clone()
    for value in level.unique().tolist():
        size = mosaic_block(value)
        if size == 1:
            continue
        sel = (level == value).nonzero().flatten()
        part = x[sel]
        flat = part.reshape(-1, *part.shape[2:])
        pooled = torch.nn.functional.avg_pool2d(flat, size, size, ceil_mode=True)
        up = pooled.repeat_interleave(size, -2).repeat_interleave(size, -1)[..., : flat.shape[-2], : flat.shape[-1]]
        out[sel] = up.reshape(part.shape)
    return out


def corrupt_images(x: torch.Tensor, kind: str, level: torch.Tensor, bits_for) -> torch.Tensor:
    """x [K, B, C, H, W] in [0, 1] -> corrupted by `kind` at each model's level; bits_for(n) gives
    [K, n] random words (hashed from seeds, so the same for a run whatever its pack)."""
    if kind == "gaussian":
        return gaussian_noise(x, level, bits_for(x[0].numel()), clip=True)
    if kind == "salt-pepper":
        return salt_pepper(x, level, bits_for(x.shape[1] * x.shape[3] * x.shape[4]))
    if kind == "mosaic":
        return mosaic(x, level)
    raise ValueError(f"unknown image noise {kind!r}")


def char_swap(codes: torch.Tensor, index: torch.Tensor, level: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Replace a `level` fraction of each text's characters by random letters a-z.

    codes [..., L], index [...] (example numbers), level and seed broadcastable to index. As in the
    paper's code the noise is fixed per example (the same in every epoch): a hash of
    (seed, example index, position), so no noisy copy of the dataset is kept.
    """
    pos = torch.arange(codes.shape[-1], device=codes.device)
    key = _mix(_mix(index.long() * 1_000_003 + seed.long() * 7_919 + STREAM_TEXT)[..., None] + pos)
    u = uniform(key)
    letter = (key >> 44).remainder(26) + 1
    swap = (u < level[..., None]) & (codes != 0)
    return torch.where(swap, letter.to(codes.dtype), codes)
