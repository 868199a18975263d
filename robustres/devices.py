"""Devices: which torch device a `--device` name means here, and one worker device per GPU."""

from __future__ import annotations

import os

import torch

from .spec import Execution, SpecError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {name} requested but CUDA is not available here; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(name)



def default_threads() -> int:
    """Half the cores this process may use, at least 1. On 2 cores with another job running, torch's
    default of one thread per core made a 5-epoch pack 9x slower (60.7 s against 6.9 s), while one
    thread on a quiet machine costs little (benchmarks/execution_choice.py, benchmarks/RESULTS.md)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable // 2)


def use_threads(execution: Execution) -> int:
    """Set torch's CPU threads for this process from --threads / $ROBUSTRES_THREADS / the default."""
    threads = execution.threads or default_threads()
    torch.set_num_threads(threads)
    return threads


def worker_devices(execution: Execution) -> list[str]:
    """One worker per visible GPU (device auto or cuda), or --workers N on the chosen device."""
    count = torch.cuda.device_count() if execution.device in ("auto", "cuda") else 0
    if execution.workers is not None:
        if count > 0:
            return [f"cuda:{i % count}" for i in range(execution.workers)]
        return [execution.device if execution.device != "auto" else "cpu"] * execution.workers
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [execution.device]
