"""Training throughput, side by side in one process: the paper's script against the robustres engine.

(a) baseline: the paper's CIFAR script as written: its ResNet (written out below), eager float32,
    one model, a torchvision DataLoader with PIL transforms and 2 workers, batch 128, SGD with
    momentum, `loss.item()` and an accuracy `.item()` every step.
(b) the engine with K = 1: one run as a pack of one (device-resident uint8 data, batched
    augmentation, bf16 autocast and channels_last on CUDA).
(c) the engine with K models in one pack (fused; on the CPU also models in turn).

All on the same images (synthetic, or real CIFAR from an image folder with --data), same batch
size. Prints a table, the ratios (b)/(a) and (c)/(a), analytic FLOPs and, on CUDA, the MFU; the
projected time of the paper's Fig. 6 CIFAR grid from the best measured pack; and writes JSON.

From the repository root:

    .venv/bin/python -m benchmarks.throughput --depths 20 --ks 1,4 --device cpu
    python -m benchmarks.throughput --depths 20,110,218 --ks 1,4,10 --json $OUT/throughput.json

It times the shipped engine only; research/throughput_variants.py times prototypes beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustres import data as D
from robustres import devices
from robustres import transforms as T
from robustres import units as U
from robustres.models import CifarResNet, count_flops
from robustres.spec import make_run_spec

BATCH = 128
# Dense bf16 tensor-core peaks (TFLOP/s) for MFU; the CPU has none that is meaningful here.
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# ---------------------------------------------------------------------------------------------
# (a) the paper's script
# ---------------------------------------------------------------------------------------------


class PaperBlock(nn.Module):
    def __init__(self, cin, cout, stride, h, mismatch):
        super().__init__()
        self.h = h
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if mismatch:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.shortcut(x) + self.h * out)


class PaperResNet(nn.Module):
    def __init__(self, depth, h):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                first = stage > 0 and i == 0
                layers.append(PaperBlock(cin, cout, 2 if first else 1, h, first))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 8).flatten(1))


class PilImages(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        import torchvision.transforms as T
        from PIL import Image

        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
        self.labels = labels.tolist()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(D.CIFAR_MEAN, D.CIFAR_STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline(depth: int, images, labels, device, steps: int) -> float:
    """Images per second of the paper's training loop (after one warm-up pass of 5 steps)."""
    torch.manual_seed(0)
    net = PaperResNet(depth, 0.1).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = torch.utils.data.DataLoader(PilImages(images, labels), batch_size=BATCH, shuffle=True,
                                         num_workers=2, persistent_workers=True)
    done, started, seen = 0, None, 0
    while True:
        for x, y in loader:
            if done == 5:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            out = net(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            _ = loss.item()
            _ = out.max(1)[1].eq(y).sum().item()
            done += 1
            seen += len(y)
            if done == 5 + steps:
                return seen / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# (b), (c) the engine
# ---------------------------------------------------------------------------------------------


def engine_rate(depth: int, k: int, data: D.Data, device, precision: str, fuse: bool, steps: int,
                compile_: bool = False, graphs: bool = True, channels_last: bool = True) -> float:
    """Aggregate images per second (all K models) of the engine's training step."""
    specs = [make_run_spec(dataset="synthetic", depth=depth, h=h, seed=s, batch_size=BATCH, precision=precision)
             for s, h in zip(range(k), [0.1, 0.2, 0.5, 1.0, 2.0] * 10)]
    options = U.Options(fuse=fuse, compile=compile_, cuda_graphs=graphs, channels_last=channels_last)
    units = ([U.Unit(list(range(k)), specs, data, device, options)] if fuse
             else [U.Unit([i], specs, data, device, options) for i in range(k)])
    order = T.order(torch.tensor([s.seed for s in specs], device=device), 0, len(data.train_y))
    streams = U.make_streams(units, device, options)
    for unit in units:
        unit.start_epoch()
    per_epoch = len(data.train_y) // BATCH
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm = 10 if compile_ else 6  # CUDA graphs: 3 eager steps, the capture, replays
    for i in range(warm + steps):
        if i == warm:
            sync()
            started = time.perf_counter()
        U.step_all(units, data, order, 0, i % per_epoch, BATCH, streams)
    sync()
    return k * BATCH * steps / (time.perf_counter() - started)


def load_images(source: str, n: int) -> D.Data:
    if source == "synthetic":
        return D.synthetic("cifar10", n, 16)
    data = D.imagefolder(Path(source))
    return D.limit(data, n, 16)


def prepare(device_arg: str, precision_arg: str) -> tuple[torch.device, str, str, float | None]:
    """The device, the engine's precision there, the device's name and its bf16 peak (CUDA)."""
    device = devices.resolve_device(device_arg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    precision = precision_arg if precision_arg != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    peak = next((v for key, v in PEAKS.items() if key in name), None) if device.type == "cuda" else None
    return device, precision, name, peak


HEADER = f"{'depth':>5} {'config':<22} {'img/s/model':>12} {'img/s total':>12} {'vs (a)':>7} {'TFLOP/s':>8} {'MFU':>6}"


def train_macs(depth: int) -> int:
    """Forward multiply-adds of one image (count_flops); a training step is ~3 forward passes of 2
    FLOPs per multiply-add (research/bytes.py counts the convolutions' FLOPs op by op: the same)."""
    return count_flops(CifarResNet(depth, 0.1), torch.zeros(1, 3, 32, 32))


def recorder(depth: int, macs: int, a: float, peak: float | None, rows: list):
    """record(label, k, total): prints one row of HEADER's table and appends it to rows."""
    def record(label: str, k: int, total: float) -> None:
        # printed as soon as measured: a run stopped by a timeout keeps what it had
        tflops = 6 * macs * total / 1e12
        mfu = f"{100 * tflops / peak:5.1f}%" if peak else "     -"
        print(f"{depth:>5} {label:<22} {total / k:12,.0f} {total:12,.0f} {total / a:6.1f}x {tflops:8.2f} {mfu}",
              flush=True)
        rows.append({"depth": depth, "config": label.strip(), "k": k, "images_per_s": total,
                     "per_model": total / k, "ratio_vs_baseline": total / a, "tflops": tflops,
                     "train_flops_per_image": 6 * macs})
    return record


def common_args(doc: str, depths: str, ks: str, steps: int, baseline_steps: int) -> argparse.ArgumentParser:
    """The options every throughput script takes (this one and research/throughput_variants.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", default=depths)
    p.add_argument("--ks", default=ks)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--baseline-steps", type=int, default=baseline_steps)
    p.add_argument("--data", default="synthetic", help="synthetic, or an image folder (train/ and test/)")
    p.add_argument("--images", type=int, default=10_240)
    return p


def main() -> None:
    p = common_args(__doc__, depths="20", ks="1,4", steps=20, baseline_steps=20)
    p.add_argument("--in-turn", action="store_true", help="also time K models stepped in turn")
    p.add_argument("--compile", action="store_true", help="also time the fused pack under torch.compile")
    p.add_argument("--eager", action="store_true", help="CUDA: also time each pack without CUDA graphs")
    p.add_argument("--nchw", action="store_true", help="CUDA: also time fused packs without channels_last")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    device, precision, name, peak = prepare(args.device, args.precision)
    depths = [int(d) for d in args.depths.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    cpu_data = load_images(args.data, args.images)
    data = cpu_data.to(device)

    rows = []
    print(f"# {date.today()} {name}, torch {torch.__version__}, engine precision {precision}, "
          f"batch {BATCH}, data {args.data}", flush=True)
    print(HEADER)
    for depth in depths:
        macs = train_macs(depth)
        a = baseline(depth, cpu_data.train_x, cpu_data.train_y, device, args.baseline_steps)
        record = recorder(depth, macs, a, peak, rows)
        record("(a) paper script fp32", 1, a)
        for k in ks:
            record("(b) engine K=1" if k == 1 else f"(c) engine K={k} fused", k,
                   engine_rate(depth, k, data, device, precision, True, args.steps))
            if device.type == "cuda" and args.nchw and k > 1:
                record(f"    K={k} fused, NCHW", k,
                       engine_rate(depth, k, data, device, precision, True, args.steps, channels_last=False))
            if device.type == "cuda" and args.eager:
                record(f"    K={k} fused, no graphs", k,
                       engine_rate(depth, k, data, device, precision, True, args.steps, graphs=False))
            if k > 1 and args.in_turn:
                record(f"(c) engine K={k} in turn" + (", streams" if device.type == "cuda" else ""), k,
                       engine_rate(depth, k, data, device, precision, False, args.steps))
            if args.compile:
                record(f"    K={k} fused, compiled", k,
                       engine_rate(depth, k, data, device, precision, True, args.steps, compile_=True))

    # The paper's Fig. 6 CIFAR grid: 14 values of h x 5 seeds per depth, 80 epochs of 50,000 images,
    # plus a test pass of 10,000 images per epoch (a forward is ~1/3 of a training step).
    print("\nprojection of the Fig. 6 CIFAR grid (14 h x 5 seeds x 80 epochs per depth), best pack measured:")
    total_hours = 0.0
    for depth in depths:
        best = max((r for r in rows if r["depth"] == depth and r["config"].startswith("(")),
                   key=lambda r: r["images_per_s"])
        images = 70 * 80 * (50_000 + 10_000 / 3)
        hours = images / best["images_per_s"] / 3600
        total_hours += hours
        print(f"  depth {depth}: {images / 1e6:,.0f} M image-steps / {best['images_per_s']:,.0f} img/s "
              f"({best['config']}) = {hours:.2f} h")
    print(f"  total: {total_hours:.2f} h on this device")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "precision": precision, "rows": rows,
                                         "fig6_hours": total_hours}, indent=2))


if __name__ == "__main__":
    main()
