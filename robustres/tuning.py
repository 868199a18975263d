"""Tuning: how to execute a pack on this device. Fused or in turn (`choose_fuse`, a fixed rule
from measurements), and how many models fit in free memory (`auto_pack_size`, measured). Neither
changes what a run computes beyond float rounding, and the first never depends on timing."""

from __future__ import annotations

from typing import Sequence

import torch

from . import data as D
from . import transforms as T
from .models import count_params, init_model
from .spec import RunSpec
from .units import Options, Unit

# ---------------------------------------------------------------------------------------------
# Fused or in turn: a fixed rule per device type and model family, never a timing
# ---------------------------------------------------------------------------------------------

# The faster way to step a pack, measured (benchmarks/execution_choice.py on the CPU, 1 thread:
# in turn / fused = 4.9 for the MLP, 0.66 for ResNet-20, 0.83 for the text ResNet-9; on an H200,
# benchmarks/throughput.py: fused CIFAR ResNets 1.2-1.4x models in turn). Families not listed
# for a device are fused. The choice is a rule, not a timing: the two ways differ by float
# rounding, which large h amplifies, so a timed choice made results depend on machine load.
FUSE_RULES = {("cpu", "mlp"): True, ("cpu", "resnet"): False, ("cpu", "vdcnn"): False}


def choose_fuse(specs: Sequence[RunSpec], device: torch.device, options: Options) -> bool:
    """True: one fused network steps the pack; False: its models step in turn. --fuse/--no-fuse
    decides when given, else FUSE_RULES."""
    if options.fuse is not None:
        return options.fuse
    if len(specs) == 1:
        return True  # one model: both ways are the same computation
    return FUSE_RULES.get((device.type, specs[0].model), True)


# ---------------------------------------------------------------------------------------------
# How many models fit on the device
# ---------------------------------------------------------------------------------------------

MAX_PACK = 64


def _peak_bytes_of_a_step(specs: Sequence[RunSpec], data: D.Data, device: torch.device, options: Options) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    unit = Unit(list(range(len(specs))), specs, data, device, Options(fuse=True, channels_last=options.channels_last))
    order = T.order(unit.seeds, 0, len(data.train_y))
    unit.start_epoch()
    unit.train_step(data, order, 0, 0, specs[0].batch_size)
    unit.train_step(data, order, 0, 1 % max(1, len(data.train_y) // specs[0].batch_size), specs[0].batch_size)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del unit, order
    torch.cuda.empty_cache()
    return peak


def _activation_bytes_per_input(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Bytes of every layer output for one input: what backward keeps, roughly, per sample."""
    model = init_model(spec, num_classes, input_shape)
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        if torch.is_tensor(output):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    dtype = torch.long if spec.modality == "text" else torch.float32
    with torch.no_grad():
        model(torch.zeros((2, *input_shape), dtype=dtype))
    for handle in handles:
        handle.remove()
    return total // 2 + count_params(model) * 4 * 4 // max(1, spec.batch_size)


def _available_host_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def auto_pack_size(specs: Sequence[RunSpec], data: D.Data, device: torch.device, options: Options) -> int:
    """The most models of this kind that fit in free device memory, with a 20 % safety margin.

    On CUDA this is measured: the peak memory of real training steps with packs of 1 and 2 gives
    the cost of one more model. On the CPU it is estimated from the layer outputs of one input.
    """
    if len(specs) == 1:
        return 1
    if device.type != "cuda":
        return estimated_cpu_fit(specs, data.input_shape, data.num_classes)
    one = _peak_bytes_of_a_step(specs[:1], data, device, options)
    two = _peak_bytes_of_a_step(specs[:2], data, device, options)
    per_model = max(two - one, 1)
    free, _ = torch.cuda.mem_get_info(device)
    fits = int((0.8 * free - (one - per_model)) // per_model)
    return max(1, min(len(specs), fits, MAX_PACK))


def estimated_cpu_fit(specs: Sequence[RunSpec], input_shape: tuple[int, ...], num_classes: int) -> int:
    """On the CPU: half the available host memory over an estimate of one model's training step."""
    per_model = _activation_bytes_per_input(specs[0], input_shape, num_classes) * specs[0].batch_size * 2
    fits = int(0.5 * _available_host_bytes() // max(per_model, 1))
    return max(1, min(len(specs), fits, MAX_PACK))


