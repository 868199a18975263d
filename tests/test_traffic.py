"""Memory traffic of a training step, counted op by op by benchmarks/bytes.py: the numbers behind
the GPU speed work (a fused pack's step is bound by bytes moved, not by arithmetic)."""

import importlib
import sys
from pathlib import Path

import torch

from robustres.models import CifarResNet, count_flops

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("bytes"), importlib.import_module("variants")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_folding_h_into_batch_norm_moves_fewer_bytes_per_image():
    counting, variants = _modules()
    folded = sum(counting.per_image_at_128(20, 2)[0].values())
    with variants.unfolded():
        apart = sum(counting.per_image_at_128(20, 2)[0].values())
    # measured: 11.2 vs 12.6 MB per image (ResNet-20); 59.1 vs 67.4 on ResNet-110
    assert 10e6 < folded < 0.92 * apart < 13e6


def test_counted_convolution_flops_are_three_forward_passes_of_two_flops_per_multiply_add():
    counting, _ = _modules()
    by_class, _, flops, _ = counting.per_image_at_128(20, 2)
    macs = count_flops(CifarResNet(20, 0.1), torch.zeros(1, 3, 32, 32))
    assert abs(flops - 6 * macs) < 0.01 * 6 * macs
    assert by_class["convolution"] > 0 and by_class["batch norm"] > 0
