"""How fast the paper's Fig. 6 CIFAR grid could train on one GPU, at best, per kernel design.

A fused pack's training step is bound by the bytes it moves, not by its arithmetic (the H100 ran it
at 3.5% of its bf16 peak and at 44-53% of its copy rate; research/bytes.py counts the bytes op by
op). This script asks what a *better* step could move. For each way of cutting a residual block
into kernels it lists what every kernel must read and write, in bytes per element of the block's
activations, and sums that over the blocks of ResNet-20, 110 and 218 (shapes taken from the model).

The designs, each one keeping the float32 residual stream and bf16 everywhere else:
- separate: what `--compile` builds. cuDNN convolutions; BN, ReLU, h and the adds fused into the
  passes between them, but every BN needs a pass of its own to get its statistics.
- fused: convolution kernels that apply the preceding BN + ReLU while loading their input and sum
  their output's BN statistics before storing it, forward and backward (custom implicit GEMM).
- fused, dgrad+wgrad: as fused, and each convolution's input and weight gradients in one kernel,
  so their shared inputs are read once.

Left out of every count: the stem, the pooling and the head, the loss, the optimizer and the
input pipeline (0.2-1.0 MB per image, counted by bytes.py); a projection shortcut is counted as an
identity, and the halo re-reads of convolutions as free. `--check` compares the "separate" design
with inductor's own count of what `--compile` moves, to say how close the model is.

    .venv/bin/python -m research.floor             # from the repository root
    .venv/bin/python -m research.floor --check 20  # + inductor's count of ResNet-20 (a minute)
"""

from __future__ import annotations

import argparse

import torch

from robustres.models import CifarResNet, ImageBlock, count_flops

# (kernel, [(tensor, bytes per element, "in" | "out")]): "in" tensors have the block's input shape,
# "out" tensors its output shape. x is the float32 stream into the block, xb its bf16 copy (what
# convolutions read), x1 the stream out of it (and x1b, mask its copy and its ReLU mask); y1, y2
# the two convolutions' outputs, a1 = ReLU(BN1(y1)); g1 the gradient of the loss by x1 (float32),
# g by x; dy2, da1, dy1, dx the bf16 gradients inside the block.
Kernel = tuple[str, list[tuple[str, int, str]]]

TAIL: Kernel = ("x1 = ReLU(x + h BN2(y2)), bf16 copy, mask",
                [("y2", 2, "out"), ("x", 4, "in"), ("x1", 4, "out"), ("x1b", 2, "out"), ("mask", 1, "out")])

SEPARATE: list[Kernel] = [
    ("conv1", [("xb", 2, "in"), ("y1", 2, "out")]),
    ("BN1 statistics", [("y1", 2, "out")]),
    ("a1 = ReLU(BN1(y1))", [("y1", 2, "out"), ("a1", 2, "out")]),
    ("conv2", [("a1", 2, "out"), ("y2", 2, "out")]),
    ("BN2 statistics", [("y2", 2, "out")]),
    TAIL,
    ("BN2 gradient sums", [("g1", 4, "out"), ("mask", 1, "out"), ("y2", 2, "out")]),
    ("dy2 = BN2 backward", [("g1", 4, "out"), ("mask", 1, "out"), ("y2", 2, "out"), ("dy2", 2, "out")]),
    ("conv2 dgrad", [("dy2", 2, "out"), ("da1", 2, "out")]),
    ("conv2 wgrad", [("dy2", 2, "out"), ("a1", 2, "out")]),
    ("BN1 gradient sums", [("da1", 2, "out"), ("y1", 2, "out")]),
    ("dy1 = BN1, ReLU backward", [("da1", 2, "out"), ("y1", 2, "out"), ("dy1", 2, "out")]),
    ("conv1 dgrad", [("dy1", 2, "out"), ("dx", 2, "in")]),
    ("conv1 wgrad", [("dy1", 2, "out"), ("xb", 2, "in")]),
    ("g = dx + mask g1", [("dx", 2, "in"), ("g1", 4, "out"), ("mask", 1, "out"), ("g", 4, "in")]),
]

FUSED: list[Kernel] = [
    ("conv1, y1 statistics", [("xb", 2, "in"), ("y1", 2, "out")]),
    ("BN1 + ReLU -> conv2, y2 statistics", [("y1", 2, "out"), ("y2", 2, "out")]),
    TAIL,
    # g1 itself is in registers there: the epilogue of the kernel that writes it (the next block's).
    ("BN2 gradient sums, in g1's producer", [("mask", 1, "out"), ("y2", 2, "out")]),
    ("BN2 backward -> conv2 dgrad, BN1 gradient sums",
     [("g1", 4, "out"), ("mask", 1, "out"), ("y2", 2, "out"), ("y1", 2, "out"), ("da1", 2, "out")]),
    ("BN2 backward, a1 from y1 -> conv2 wgrad", [("g1", 4, "out"), ("mask", 1, "out"), ("y2", 2, "out"),
                                                 ("y1", 2, "out")]),
    ("BN1 backward -> conv1 dgrad, + mask g1",
     [("da1", 2, "out"), ("y1", 2, "out"), ("g1", 4, "out"), ("mask", 1, "out"), ("g", 4, "in")]),
    ("BN1 backward -> conv1 wgrad", [("da1", 2, "out"), ("y1", 2, "out"), ("xb", 2, "in")]),
]

FUSED_DW: list[Kernel] = FUSED[:4] + [
    ("BN2 backward -> conv2 dgrad + wgrad, BN1 gradient sums",
     [("g1", 4, "out"), ("mask", 1, "out"), ("y2", 2, "out"), ("y1", 2, "out"), ("da1", 2, "out")]),
    ("BN1 backward -> conv1 dgrad + wgrad, + mask g1",
     [("da1", 2, "out"), ("y1", 2, "out"), ("xb", 2, "in"), ("g1", 4, "out"), ("mask", 1, "out"), ("g", 4, "in")]),
]

DESIGNS = {"separate (--compile)": SEPARATE, "fused": FUSED, "fused, dgrad+wgrad": FUSED_DW}

FIG6_RUNS = 14 * 5  # values of h x seeds, per depth
FIG6_STEPS = FIG6_RUNS * 80 * (50_000 + 10_000 / 3)  # image-steps per depth; a test forward ~ 1/3 step


def bytes_per_element(design: list[Kernel]) -> float:
    """Bytes per activation element of a block whose input and output have the same shape."""
    return sum(b for _, tensors in design for _, b, _ in tensors)


def block_shapes(depth: int) -> list[tuple[int, int]]:
    """(input elements, output elements) per image of every residual block, from the model."""
    model = CifarResNet(depth, 0.1).eval()
    shapes = []
    hooks = [m.register_forward_hook(lambda _, i, o: shapes.append((i[0][0].numel(), o[0].numel())))
             for m in model.modules() if isinstance(m, ImageBlock)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return shapes


def bytes_per_image(design: list[Kernel], shapes: list[tuple[int, int]]) -> float:
    total = 0.0
    for e_in, e_out in shapes:
        total += sum(b * (e_in if where == "in" else e_out) for _, tensors in design for _, b, where in tensors)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bandwidth", type=float, default=3.0e12, help="bytes/s (H100 copy rate: ~3.0e12)")
    p.add_argument("--peak", type=float, default=989e12, help="FLOP/s (H100 dense bf16: 989e12)")
    p.add_argument("--hours", type=float, default=2.0, help="the target for the Fig. 6 grid")
    p.add_argument("--check", type=int, metavar="DEPTH", help="compare with inductor's count for a pack of 2 "
                   "of this depth (20: a minute of compiling, 110: several)")
    p.add_argument("--kernels", action="store_true", help="list every design's kernels and their bytes")
    args = p.parse_args()
    depths = (20, 110, 218)
    shapes = {d: block_shapes(d) for d in depths}
    elements = sum(e_out for d in depths for _, e_out in shapes[d])
    flops = sum(6 * count_flops(CifarResNet(d, 0.1), torch.zeros(1, 3, 32, 32)) for d in depths)

    print(f"Fig. 6 CIFAR grid: {FIG6_RUNS} runs x 80 epochs per depth = {FIG6_STEPS / 1e6:.0f} M image-steps "
          f"per depth; bandwidth {args.bandwidth / 1e12:.1f} TB/s, peak {args.peak / 1e12:.0f} TFLOP/s")
    print(f"  arithmetic alone: {flops / 1e9:.2f} GFLOP per image over the three depths -> "
          f"{FIG6_STEPS * flops / args.peak / 3600:.2f} h at 100% of the peak")
    budget = args.hours * 3600 * args.bandwidth / FIG6_STEPS
    print(f"  {args.hours:g} h at 100% of the bandwidth allows {budget / 1e6:.1f} MB per image over the three "
          f"depths, i.e. {budget / elements:.1f} bytes per block activation element ({elements:,} of them)")
    print()
    print(f"{'design':<24} {'B/elem':>6} {'ResNet-20':>10} {'ResNet-110':>11} {'ResNet-218':>11} {'sum MB':>8} "
          f"{'h at 100%':>10} {'h at 70%':>9}")
    for name, design in DESIGNS.items():
        mb = [bytes_per_image(design, shapes[d]) / 1e6 for d in depths]
        hours = FIG6_STEPS * sum(mb) * 1e6 / args.bandwidth / 3600
        print(f"{name:<24} {bytes_per_element(design):6.0f} {mb[0]:10.2f} {mb[1]:11.2f} {mb[2]:11.2f} "
              f"{sum(mb):8.1f} {hours:10.2f} {hours / 0.7:9.2f}")
    if args.kernels:
        for name, design in DESIGNS.items():
            print(f"\n{name}:")
            for kernel, tensors in design:
                listed = ", ".join(f"{t} {b}{'' if w == 'out' else ' (in)'}" for t, b, w in tensors)
                print(f"  {sum(b for _, b, _ in tensors):3d}  {kernel:<52} {listed}")
    if args.check:
        from research.bytes import count_inductor_bytes, per_image_at_128

        torch.set_num_threads(2)
        count_inductor_bytes()
        counted = per_image_at_128(args.check, 2, compiled=True)[0]
        model = bytes_per_image(SEPARATE, shapes.get(args.check) or block_shapes(args.check))
        inside, outside = counted["compiled network"], counted["outside the network"]
        print(f"\ncheck, ResNet-{args.check} pack of 2 under --compile: inductor moves {inside / 1e6:.2f} MB "
              f"per image in the network (+ {outside / 1e6:.2f} outside it); "
              f"the 'separate' model says {model / 1e6:.2f}")


if __name__ == "__main__":
    main()
