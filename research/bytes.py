"""Bytes and FLOPs of one training step of a fused pack, counted op by op (no GPU needed).

Every ATen operation of the engine's training step (input pipeline, forward, backward, optimizer)
is intercepted with a TorchDispatchMode, and its tensor inputs and outputs are counted: bytes read
plus bytes written, each op touching each of its operands once. That is the traffic the step must
move when every op is its own kernel and nothing stays in cache between kernels, which is how an
eager or graph-replayed step runs on a GPU (a ResNet-110 pack's activations are hundreds of MB, far
beyond the L2). Convolution FLOPs are counted from the shapes (2 per multiply-add).

The step runs on the CPU under bf16 autocast, like the CUDA default; counts are taken at two batch
sizes and extrapolated linearly to batch 128 (activations scale with the batch, weights and the
optimizer do not). The result is bytes per image (all K models' images counted), by op class, and
the throughput floor it implies at a given memory bandwidth.

With --compiled the network runs under torch.compile and inductor's own count of its kernels'
reads and writes (forward and backward graphs, convolutions included) is reported instead: what
`--compile` should move. With --unfolded the blocks compute h * BN(F) as a separate product, as the
engine did before h was folded into BN's affine map. --bf16-stream counts a residual stream kept in
bf16, which is not a valid engine (it rounds small-h updates away), to price the float32 stream.

    .venv/bin/python -m research.bytes --depth 110 --k 10          # from the repository root
    .venv/bin/python -m research.bytes --depth 110 --k 10 --unfolded
    .venv/bin/python -m research.bytes --depth 110 --k 10 --compiled     # minutes of compiling
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from contextlib import ExitStack

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from research.variants import bf16_stream, unfolded
from robustres import transforms as T
from robustres import units
from robustres import data as D
from robustres import engine
from robustres.models import CifarResNet, count_flops
from robustres.spec import make_run_spec

BATCH = 128


def op_class(name: str) -> str:
    """A coarse class for an ATen op name, for the breakdown."""
    if "convolution" in name:
        return "convolution"
    if "batch_norm" in name:
        return "batch norm"
    if name.startswith("_foreach") or name.startswith("_fused_sgd"):
        return "optimizer"
    if name in ("_to_copy", "copy_", "clone", "_copy_from", "contiguous"):
        return "casts and copies"
    if name in ("relu", "relu_", "threshold_backward", "le", "where"):
        return "relu"
    if name in ("mul", "mul_", "add", "add_", "sum"):
        return "h-scale, add, sum"  # the residual adds (and, unfolded, the h-scale), gradient sums
    return "other"


WRITE_ONLY = ("copy_", "zero_", "fill_", "index_copy_", "uniform_", "normal_")
OUTSIDE = "outside the network"  # input pipeline, loss, optimizer
COMPILED = "compiled network"


class Counter(TorchDispatchMode):
    """Sums bytes read and written by every non-view ATen op, per op class and per op name."""

    def __init__(self):
        super().__init__()
        self.bytes = defaultdict(int)
        self.calls = defaultdict(int)
        self.by_name = defaultdict(int)
        self.conv_flops = 0
        self.inside = False  # in the network's forward or backward pass

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        # A view (its output aliases an input and nothing is written) moves no bytes.
        if schema.returns and all(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
            return out
        name = func.__name__.split(".")[0]
        if name in ("empty", "empty_like", "empty_strided", "detach", "_local_scalar_dense", "set_", "lift_fresh",
                    "_unsafe_view"):  # no bytes: allocations, views (_unsafe_view has no alias mark), scalars
            return out
        # An in-place op's output is a write of its first input, which it reads too, except for the
        # ops that only overwrite it.
        read = args[1:] if name in WRITE_ONLY else args
        total = 0
        for t in tree_flatten((read, kwargs))[0] + tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() > 0:
                total += t.numel() * t.element_size()
        if name == "convolution":
            w = args[1]  # [Cout, Cin / groups, kh, kw]: 2 FLOPs per output element and weight of a group
            self.conv_flops += 2 * out.numel() * w[0].numel()
        elif name == "convolution_backward":
            grad, w, mask = args[0], args[2], args[-1]  # input and weight gradients, each as a forward
            self.conv_flops += 2 * grad.numel() * w[0].numel() * (int(mask[0]) + int(mask[1]))
        cls = op_class(name) if self.inside else OUTSIDE
        self.bytes[cls] += total
        self.calls[cls] += 1
        self.by_name[name] += total
        return out


def count_inductor_bytes() -> None:
    """Makes inductor add up the bytes of the kernels it compiles (metrics.num_bytes_accessed),
    which it does only while its metrics log is enabled, without printing that log."""
    import logging

    torch._logging.set_logs(inductor_metrics=True)
    log = logging.getLogger("torch._inductor.compile_fx.__inductor_metrics")
    log.propagate = False
    log.handlers = [logging.NullHandler()]


def count(depth: int, k: int, batch: int, compiled: bool) -> Counter:
    """One training step's bytes; with `compiled`, the network's part as inductor counts it."""
    specs = [make_run_spec(dataset="synthetic", depth=depth, h=h, seed=s, batch_size=batch, precision="bf16")
             for s, h in zip(range(k), [0.1, 0.2, 0.5, 1.0, 2.0] * 10)]
    data = D.synthetic("cifar10", 4 * batch, 16)
    order = T.order(torch.tensor([s.seed for s in specs]), 0, len(data.train_y))
    unit = units.Unit(list(range(k)), specs, data, torch.device("cpu"), units.Options(fuse=True))
    unit.start_epoch()
    unit.train_step(data, order, 0, 0, batch)  # momentum buffers exist from here on, as in training
    counter = Counter()

    def enter(*_):
        counter.inside = True

    def leave(*_):
        counter.inside = False

    backward = torch.Tensor.backward

    def counted_backward(self, *args, **kwargs):
        enter()
        try:
            return backward(self, *args, **kwargs)
        finally:
            leave()

    hooks = [unit.model.register_forward_pre_hook(enter), unit.model.register_forward_hook(leave)]
    torch.Tensor.backward = counted_backward
    try:
        with counter:
            unit.train_step(data, order, 0, 1, batch)
    finally:
        torch.Tensor.backward = backward
        for hook in hooks:
            hook.remove()
    if compiled:
        import torch._inductor.metrics as metrics

        torch._dynamo.reset()  # a fresh, static-shaped compile for this batch size
        metrics.reset()
        unit = units.Unit(list(range(k)), specs, data, torch.device("cpu"), units.Options(fuse=True, compile=True))
        unit.start_epoch()
        unit.train_step(data, order, 0, 0, batch)  # compiles the forward and the backward graph
        for cls in [c for c in counter.bytes if c != OUTSIDE]:
            del counter.bytes[cls], counter.calls[cls]
        counter.bytes[COMPILED] = metrics.num_bytes_accessed
        counter.calls[COMPILED] = metrics.generated_kernel_count
    return counter


def per_image_at_128(depth: int, k: int, batches: tuple[int, int] = (4, 8), compiled: bool = False):
    """Bytes per image of the pack at batch 128 per model, by op class and by op name, conv FLOPs
    per image, and op counts per class: counted at two small batches, extrapolated linearly
    (x(b) = fixed + per * b: activations scale with the batch, weights and optimizer do not)."""
    b1, b2 = batches
    c1, c2 = count(depth, k, b1, compiled), count(depth, k, b2, compiled)

    def at_128(x1: float, x2: float) -> float:
        per = (x2 - x1) / (b2 - b1)
        return (x1 - per * b1 + per * BATCH) / (BATCH * k)

    by_class = {cls: at_128(c1.bytes[cls], c2.bytes[cls]) for cls in c2.bytes}
    by_name = {name: at_128(c1.by_name[name], c2.by_name[name]) for name in c2.by_name}
    return by_class, by_name, at_128(c1.conv_flops, c2.conv_flops), dict(c2.calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=110)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batches", default="4,8", help="two small batch sizes to extrapolate from")
    p.add_argument("--bandwidth", type=float, default=3.0e12, help="bytes/s, for the floor (H100 copy: ~3.0e12)")
    p.add_argument("--unfolded", action="store_true", help="h * BN(F) as its own product (the old blocks)")
    p.add_argument("--bf16-stream", action="store_true",
                   help="count only: the residual stream in bf16 (wrong at small h; what float32 costs)")
    p.add_argument("--compiled", action="store_true", help="inductor's count of the torch.compile'd network")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(2)
    variant = ExitStack()  # held open for the whole process
    if args.unfolded:
        variant.enter_context(unfolded())
    if args.bf16_stream:
        variant.enter_context(bf16_stream())
    if args.compiled:
        count_inductor_bytes()
    b1, b2 = (int(v) for v in args.batches.split(","))
    per_image, by_name, flops, calls = per_image_at_128(args.depth, args.k, (b1, b2), args.compiled)

    macs = count_flops(CifarResNet(args.depth, 0.1), torch.zeros(1, 3, 32, 32))
    what = ("compiled" if args.compiled else "eager") + (", h unfolded" if args.unfolded else "") + (
        ", bf16 residual stream" if args.bf16_stream else "")
    print(f"ResNet-{args.depth}, pack of {args.k}, {what}, bf16 autocast, batch {BATCH} per model "
          f"(extrapolated from {b1} and {b2}); per image of the pack:")
    total = sum(per_image.values())
    for cls in sorted(per_image, key=lambda c: -per_image[c]):
        print(f"  {cls:<26} {per_image[cls] / 1e6:8.2f} MB   {calls[cls]:6d} ops")
    print(f"  {'total':<26} {total / 1e6:8.2f} MB")
    if not args.compiled:
        print(f"conv FLOPs per image {flops / 1e9:.3f} G (6 x {macs / 1e6:.1f} M forward mult-adds = "
              f"{6 * macs / 1e9:.3f} G)")
    print(f"floor at {args.bandwidth / 1e12:.1f} TB/s: {args.bandwidth / total:,.0f} images/s")
    if args.compiled:
        return
    print("largest ops:")
    for name in sorted(by_name, key=lambda n: -by_name[n])[:args.top]:
        print(f"  {name:<32} {by_name[name] / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()
