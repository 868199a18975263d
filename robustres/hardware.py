"""What is known about machines without importing torch: is a GPU driver there at all, and how fast
the engine was measured to train (benchmarks/RESULTS.md), for the dry runs' wall-time estimates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SpecError

# Files a GPU driver creates on Linux: NVIDIA's, AMD's (ROCm builds of torch say "cuda" too), WSL's.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def gpu_driver_present() -> bool:
    """False only when CUDA surely is not there: no GPU visible (CUDA_VISIBLE_DEVICES) or, on Linux,
    no driver's files; elsewhere True (torch decides). Importing torch to ask takes seconds."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    if not os.path.isdir("/proc/self"):  # not Linux: no files to look at
        return True
    return any(os.path.exists(path) for path in GPU_DRIVER_FILES)


@dataclass(frozen=True)
class Rate:
    """Training speed in the dry run's own count (3x forward multiply-adds per training image), as a
    range: the slowest and fastest measurement that apply (load, threads, depth, pack size)."""

    low: float  # per second
    high: float
    source: str  # what was measured, where; the numbers are in benchmarks/RESULTS.md


# (device type, model family, precision) -> Rate: measured model-images/s times 3x the model's
# forward multiply-adds per image (models.count_flops), or a measured sweep's count over its seconds.
RATES = {
    # "Training throughput on an H100", K=10 fused, CUDA graph, bf16: 105,206 img/s at depth 20
    # (40.81 M multiply-adds), 23,036 at 110 (253.1 M), 11,902 at 218 (508.0 M).
    ("cuda", "resnet", "bf16"): Rate(1.288e13, 1.814e13, "an H100, CIFAR ResNet-20/110/218 in fused packs of 10, "
                                     "bf16 (benchmarks/RESULTS.md)"),
    # "Fused or in turn, and CPU threads": ResNet-20 in turn, K=4, batch 128, 1 thread: 2.7501 s per
    # step with another job on the cores (186 img/s) to 1.8916 s quiet (271 img/s).
    ("cpu", "resnet", "fp32"): Rate(2.280e10, 3.314e10, "2 shared x86_64 cores, 1 thread, CIFAR ResNet-20 "
                                    "(benchmarks/RESULTS.md)"),
    # make run's quick-moons sweep (6.108 G in this count: 72 MLP runs of depth 4, 10 and 30), end to
    # end with test passes: 18.4 s on 2 quiet cores, up to 277 s beside other jobs (README.md).
    ("cpu", "mlp", "fp32"): Rate(2.205e7, 3.320e8, "2 x86_64 cores, 1 thread, make run's two-moons sweep end to "
                                 "end, quiet to shared (README.md)"),
    # "Fused or in turn" again: text ResNet-9 (327.2 M multiply-adds), K=4, batch 64, 1 thread: 29.99 s per
    # step fused (8.5 img/s) and 25.02 s in turn (10.2 img/s); one measurement each.
    ("cpu", "vdcnn", "fp32"): Rate(8.38e9, 1.004e10, "2 x86_64 cores, 1 thread, text ResNet-9, fused and in turn "
                                   "(benchmarks/RESULTS.md)"),
}


def estimate(spec, device_type: str, cost: float) -> dict:
    """Seconds to train `cost` (the plan's count) for a RunSpec's model family and precision on a
    device type: [fastest, slowest] and the rate's source, or None and why there is none."""
    rate = RATES.get((device_type, spec.model, spec.precision))
    if rate is None:
        return {"seconds": None, "rate": f"no measured rate for the {spec.model} in {spec.precision} on {device_type}"}
    return {"seconds": [cost / rate.high, cost / rate.low], "rate": rate.source,
            "rate_flop_per_s": [rate.low, rate.high]}


def wall_time(estimates: list[dict]) -> dict:
    """The sum of `estimate`s with a rate, a range from the rates' spread (load, threads, depth); the
    others are counted, and every rate used or missing is named."""
    known = [e["seconds"] for e in estimates if e["seconds"] is not None]
    return {"seconds": [sum(s[0] for s in known), sum(s[1] for s in known)] if known else None,
            "estimated": len(known), "of": len(estimates), "rates": sorted({e["rate"] for e in estimates})}


def check_device(device: str) -> str:
    """Validate the device string's form, and refuse CUDA where no GPU driver is there at all;
    everything else about CUDA is checked where torch is loaded (seconds later)."""
    if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not gpu_driver_present():
            raise SpecError(f"device {device} requested but CUDA is not available here (no GPU driver, or "
                            "CUDA_VISIBLE_DEVICES hides every GPU); use --device cpu")
        return device
    raise SpecError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
