"""The fused BN + ReLU -> convolution -> statistics prototype (benchmarks/fused_conv.py), checked
on the CPU in Triton's interpreter, in float32, against PyTorch's ops."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# TRITON_INTERPRET is read when triton decorates its own library, so it must be set before triton
# is first imported: a fresh interpreter.
SCRIPT = """
import json, sys, torch
import fused_conv as fc
cases = json.loads(sys.argv[1])
out = [fc.compare(n=3, k=2, cin=c, cout=o, hw=7, stride=s, prologue=p, dtype=torch.float32) for c, o, s, p in cases]
x, weight, scale, shift = fc.example(1, 1, 16, 16, 4, "cpu", dtype=torch.float32)
shift = torch.full_like(shift, 2.0)  # ReLU(BN(0)) = 2 would leak in where the padding is
y, _, _ = fc.bn_relu_conv(x, weight, 1, 1, scale, shift, block_m=16)
ref, _, _ = fc.reference(x, weight, 1, 1, scale, shift)
print(json.dumps({"cases": out, "padding": (y - ref).abs().max().item()}))
"""

CASES = [(16, 16, 1, True), (16, 32, 2, False), (32, 32, 1, True), (32, 64, 2, True)]


def test_fused_kernel_computes_the_convolution_of_relu_bn_and_its_statistics():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(BENCHMARKS))
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # odd sizes: the last program's rows run past the images, and every border takes the padding
    for case, (dy, d1, d2) in zip(CASES, result["cases"]):
        assert dy < 1e-5 and d1 < 1e-5 and d2 < 1e-5, (case, dy, d1, d2)
    assert result["padding"] < 1e-5  # padding is zero after BN + ReLU, not ReLU(shift)
