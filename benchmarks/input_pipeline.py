"""Training-input pipeline throughput: the paper's PIL/DataLoader path against robustres's tensors.

(a) the paper's code: torchvision CIFAR transforms (RandomCrop(32, padding=4), RandomHorizontalFlip,
    ToTensor, Normalize) on PIL images through a DataLoader with 2 workers, batch 128;
(b) robustres: the same augmentation as batched tensor ops on a uint8 tensor (data.crop_flip,
    to_float_images, normalize), batch 128, on the same machine in the same process.

Both produce normalised float batches of 128 x 3 x 32 x 32; no model runs. Usage:

    .venv/bin/python -m benchmarks.input_pipeline [--images N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from robustres import data as D
from robustres import transforms as TR


def paper_style(images: torch.Tensor, batch: int) -> float:
    import torchvision.transforms as T
    from PIL import Image

    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(D.CIFAR_MEAN, D.CIFAR_STD)])

    class Set(torch.utils.data.Dataset):
        def __len__(self):
            return len(pil)

        def __getitem__(self, i):
            return transform(pil[i]), 0

    loader = torch.utils.data.DataLoader(Set(), batch_size=batch, shuffle=True, num_workers=2)
    started = time.perf_counter()
    n = sum(len(x) for x, _ in loader)
    return n / (time.perf_counter() - started)


def on_tensors(images: torch.Tensor, batch: int, device: torch.device) -> float:
    x = images.to(device)
    mean, std = torch.tensor(D.CIFAR_MEAN, device=device), torch.tensor(D.CIFAR_STD, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    for repeat in range(2):  # the first pass warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=g, device=device)
        for i in range(0, len(x), batch):
            out = TR.normalize(TR.to_float_images(TR.crop_flip(x[order[i:i + batch]], g)), mean, std)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    assert out.shape[1:] == (3, 32, 32)
    return len(x) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    a = paper_style(images, 128)
    b = on_tensors(images, 128, torch.device(args.device))
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"{'pipeline':48s} {'images/s':>10s}")
    print(f"{'(a) PIL transforms, DataLoader, 2 workers':48s} {a:10,.0f}")
    print(f"{'(b) robustres batched tensor ops':48s} {b:10,.0f}")
    print(f"ratio (b)/(a): {b / a:.1f}x")


if __name__ == "__main__":
    main()
