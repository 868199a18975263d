"""Memory traffic of a training step, counted op by op by research/bytes.py: the numbers behind
the GPU speed work (a fused pack's step is bound by bytes moved, not by arithmetic)."""

import torch

from research import bytes as counting
from research import floor, variants
from robustres.models import CifarResNet, count_flops


def test_folding_h_into_batch_norm_moves_fewer_bytes_per_image():
    folded = sum(counting.per_image_at_128(20, 2)[0].values())
    with variants.unfolded():
        apart = sum(counting.per_image_at_128(20, 2)[0].values())
    # measured: 11.2 vs 12.6 MB per image (ResNet-20); 59.1 vs 67.4 on ResNet-110
    assert 10e6 < folded < 0.92 * apart < 13e6


def test_counted_convolution_flops_are_three_forward_passes_of_two_flops_per_multiply_add():
    by_class, _, flops, _ = counting.per_image_at_128(20, 2)
    macs = count_flops(CifarResNet(20, 0.1), torch.zeros(1, 3, 32, 32))
    assert abs(flops - 6 * macs) < 0.01 * 6 * macs
    assert by_class["convolution"] > 0 and by_class["batch norm"] > 0


def test_traffic_model_takes_every_blocks_shape_from_the_model():
    for depth in (20, 110, 218):
        n = (depth - 2) // 6
        shapes = floor.block_shapes(depth)
        assert len(shapes) == 3 * n
        # stage widths 16, 32, 64 at 32, 16, 8 pixels; a stage's first block halves the pixels
        assert [e_out for _, e_out in shapes] == [16 * 32 * 32] * n + [32 * 16 * 16] * n + [64 * 8 * 8] * n
        assert shapes[n] == (16 * 32 * 32, 32 * 16 * 16) and shapes[2 * n] == (32 * 16 * 16, 64 * 8 * 8)


def test_fused_kernel_designs_move_fewer_bytes_and_never_store_what_they_fuse_away():
    per_element = {name: floor.bytes_per_element(d) for name, d in floor.DESIGNS.items()}
    assert per_element == {"separate (--compile)": 82, "fused": 63, "fused, dgrad+wgrad": 50}
    for design in (floor.FUSED, floor.FUSED_DW):
        stored = {t for _, tensors in design for t, _, _ in tensors}
        assert not stored & {"a1", "dy2", "dy1", "dx"}  # made and used inside one kernel
    shapes = floor.block_shapes(110)
    # ResNet-110, one image: 54 blocks, 516,096 activation elements; the two stride-2 blocks read
    # inputs twice their outputs' size, which adds less than a byte per element to the 82
    mb = floor.bytes_per_image(floor.SEPARATE, shapes)
    assert sum(e for _, e in shapes) == 516_096
    assert 82 * 516_096 < mb < 83 * 516_096
