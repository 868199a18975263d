"""Where the time of a fused pack's training step goes, kernel by kernel (torch.profiler).

bytes.py says how many bytes each class of op must move; this says how long each class takes on
the device, so their ratio shows which kernels run far from the memory bandwidth. Steps are taken
as in training (on CUDA: the captured graph's replays); device time is summed per kernel class
and per kernel, and printed per step.

    python3 -m research.profile_step --depth 110 --k 10               # on the GPU, from the repository root
    .venv/bin/python -m research.profile_step --depth 8 --k 2 --steps 2 --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from research import bytes as counting
from research.variants import unfolded
from robustres import transforms as T
from robustres import units
from robustres import devices
from robustres import data as D
from robustres import engine
from robustres.spec import make_run_spec

BATCH = 128
CLASSES = (  # first match wins; kernel names of cuDNN, cuBLAS, PyTorch and inductor, and ATen ops
    ("convolution, weight grad", ("wgrad", "convolution_backward_weight")),
    ("convolution, data grad", ("dgrad", "convolution_backward_input")),
    ("convolution", ("conv", "implicit_gemm", "xmma", "cudnn::", "sm90_", "sm80_", "nchwToNhwc", "nhwcToNchw")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_", "welford")),
    ("optimizer", ("foreach", "multi_tensor", "sgd")),
    ("inductor (fused)", ("triton",)),
    ("reductions", ("reduce",)),
    ("casts and copies", ("copy", "_to_copy", "cast")),
    ("elementwise", ("elementwise", "vectorized", "relu", "threshold", "add", "mul", "where")),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for label, keys in CLASSES:
        if any(key.lower() in low for key in keys):
            return label
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=110)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--unfolded", action="store_true", help="blocks with h * BN(F) as a separate product")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    device = devices.resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    precision = "bf16" if cuda else "fp32"
    specs = [make_run_spec(dataset="synthetic", depth=args.depth, h=h, seed=s, batch_size=BATCH, precision=precision)
             for s, h in zip(range(args.k), [0.1, 0.2, 0.5, 1.0, 2.0] * 10)]
    data = D.synthetic("cifar10", 4 * BATCH, 16).to(device)
    with unfolded() if args.unfolded else contextlib.nullcontext():
        unit = units.Unit(list(range(args.k)), specs, data, device, units.Options(fuse=True, compile=args.compile))
        order = T.order(torch.tensor([s.seed for s in specs], device=device), 0, len(data.train_y))
        unit.start_epoch()
        per_epoch = len(data.train_y) // BATCH
        for i in range(6):  # on CUDA: 3 eager steps, the capture, replays
            unit.train_step(data, order, 0, i % per_epoch, BATCH)
        if cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for i in range(args.steps):
                unit.train_step(data, order, 0, i % per_epoch, BATCH)
            if cuda:
                torch.cuda.synchronize()

    by_class, by_name = defaultdict(float), defaultdict(float)
    for event in prof.key_averages():
        if cuda:
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = event.self_device_time_total
        else:
            if not event.key.startswith("aten::"):
                continue
            us = event.self_cpu_time_total
        by_class[kernel_class(event.key)] += us / args.steps
        by_name[event.key] += us / args.steps
    total = sum(by_class.values())
    images = args.k * BATCH
    what = ("compiled" if args.compile else "eager") + (", h unfolded" if args.unfolded else "")
    print(f"ResNet-{args.depth}, pack of {args.k}, {what}, {device.type}: {total / 1e3:.2f} ms of "
          f"{'kernel' if cuda else 'op'} time per step, {images / (total / 1e6):,.0f} images/s if back to back")
    for label in sorted(by_class, key=lambda c: -by_class[c]):
        print(f"  {label:<26} {by_class[label] / 1e3:8.3f} ms  {100 * by_class[label] / total:5.1f}%")
    print("largest:")
    for name in sorted(by_name, key=lambda n: -by_name[n])[:args.top]:
        print(f"  {by_name[name] / 1e3:8.3f} ms  {kernel_class(name):<24} {name[:90]}")
    if cuda and not args.compile:
        bandwidth(by_class, args)


def bandwidth(by_class: dict, args) -> None:
    """Counted bytes (bytes.py, on the CPU) over measured device time: the rate each part achieves."""
    torch.set_num_threads(min(8, torch.get_num_threads()))
    with unfolded() if args.unfolded else contextlib.nullcontext():
        counted = counting.per_image_at_128(args.depth, args.k)[0]
    images = args.k * BATCH
    conv_time = sum(t for c, t in by_class.items() if c.startswith("convolution"))
    parts = [("convolutions", counted.get("convolution", 0.0), conv_time),
             ("batch norm", counted.get("batch norm", 0.0), by_class.get("batch norm", 0.0))]
    rest_bytes = sum(counted.values()) - sum(b for _, b, _ in parts)
    rest_time = sum(by_class.values()) - sum(t for _, _, t in parts)
    parts.append(("everything else", rest_bytes, rest_time))
    parts.append(("the whole step", sum(counted.values()), sum(by_class.values())))
    print("achieved rate (counted bytes / device time):")
    for label, per_image, us in parts:
        if us > 0:
            print(f"  {label:<18} {per_image / 1e6:7.2f} MB/img  {us / 1e3:8.3f} ms/step  "
                  f"{per_image * images / (us * 1e-6) / 1e12:5.2f} TB/s")


if __name__ == "__main__":
    main()
