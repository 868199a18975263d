"""The fused-kernel block prototype (research/fused_block.py), checked on the CPU in Triton's
interpreter, in float32, against PyTorch's ops and against the engine's own ImageBlock."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustres.models import CifarResNet

ROOT = Path(__file__).resolve().parents[2]  # the repository root


def _interpreted(script: str) -> dict:
    """Runs script in a fresh Python under Triton's interpreter, from the repository root (where
    `research` and `robustres` import as packages); its last line of output, as JSON."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

# TRITON_INTERPRET is read when triton decorates its own library, so it must be set before triton
# is first imported: a fresh interpreter.
SCRIPT = """
import json, torch
import torch.nn.functional as F
from research import fused_block as fb
from robustres.models import ImageBlock

result = {}
# a forward convolution alone: stride 2, no prologue, odd sizes (rows past the end, borders)
torch.manual_seed(0)
x = torch.randn(3, 2 * 16, 7, 7).contiguous(memory_format=torch.channels_last)
w = torch.randn(2 * 32, 16, 3, 3) / 12
y, s0, s1 = fb.conv(x, w, 2, stride=2, block_m=16)
ref = F.conv2d(x, w, stride=2, padding=1, groups=2)
result["conv"] = [((y - ref).abs().max() / ref.abs().max()).item(),
                  ((s0 - ref.sum((0, 2, 3))).abs().max() / ref.sum((0, 2, 3)).abs().max()).item(),
                  ((s1 - ref.square().sum((0, 2, 3))).abs().max() / ref.square().sum((0, 2, 3)).max()).item()]
# the whole block, forward and backward, against PyTorch's ops: tiles that run past the end, and
# weight gradients summed over several tiles per program
result["block"] = [fb.check_block(n=3, k=3, c=c, hw=7, **cfg) for c, cfg in
                   ((16, {"block_m": 32, "wgrad_programs": 2}), (32, {"block_m": 16}))]
# ... and against the engine's own block (h folded into BN2, five values of h)
block = ImageBlock(16, 16, 1, [0.1, 0.2, 0.5, 1.0, 2.0], True).to(memory_format=torch.channels_last)
x = torch.relu(torch.randn(2, 80, 6, 6) + 0.5).contiguous(memory_format=torch.channels_last).requires_grad_()
gout = torch.randn_like(x)
params = [block.conv1.weight, block.conv2.weight, block.bn1.weight, block.bn1.bias, block.bn2.weight, block.bn2.bias]
out = block(x)
ref = [out] + list(torch.autograd.grad(out, [x] + params, gout))
out, _ = fb.fused_block(x, x.detach(), *params, block.h.scale.view(-1).contiguous(), 5, block_m=32)
mine = [out] + list(torch.autograd.grad(out, [x] + params, gout))
result["engine"] = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(mine, ref)]
print(json.dumps(result))
"""


def test_fused_block_computes_the_engines_block_and_every_gradient():
    result = _interpreted(SCRIPT)
    assert max(result["conv"]) < 1e-5
    for errors in result["block"]:
        assert set(errors) == {"x1", "dx", "dw1", "dw2", "dgamma1", "dbeta1", "dgamma2", "dbeta2"}
        assert max(errors.values()) < 1e-5, errors
    assert len(result["engine"]) == 8 and max(result["engine"]) < 1e-5


MODEL_SCRIPT = """
import copy, json, torch
import torch.nn.functional as F
from research import fused_block as fb
from research import variants
from robustres.models import CifarResNet

calls = []
own = fb.fused_block
fb.fused_block = lambda *args, **kwargs: calls.append(1) or own(*args, **kwargs)
torch.manual_seed(0)
model = CifarResNet(14, [0.1, 1.0]).train()  # two models; 6 blocks, 4 of them without projection
other = copy.deepcopy(model)
x, y = torch.randn(2, 6, 32, 32), torch.randint(0, 10, (2, 2))

def step(m):
    loss = F.cross_entropy(m(x).reshape(-1, 10), y.reshape(-1), reduction="sum")
    loss.backward()
    return loss.item()

ref = step(model)
with variants.triton_blocks(block_m=256):
    mine = step(other)
grads = [((a.grad - b.grad).abs().max() / b.grad.abs().max()).item()
         for a, b in zip(other.parameters(), model.parameters())]
stats = [((a - b).abs().max() / b.abs().max()).item() for (n, a), b in zip(other.named_buffers(), model.buffers())
         if "running" in n]
tracked = [(a == b).item() for (n, a), b in zip(other.named_buffers(), model.buffers()) if "tracked" in n]
print(json.dumps({"calls": len(calls), "loss": abs(mine - ref) / abs(ref), "grads": grads, "stats": stats,
                  "tracked": tracked}))
"""


def test_a_resnet_with_fused_blocks_trains_as_with_its_own():
    result = _interpreted(MODEL_SCRIPT)
    assert result["calls"] == 4  # the blocks with a projection shortcut keep their own forward
    assert result["loss"] < 1e-6
    assert len(result["grads"]) == len(list(CifarResNet(14, [0.1, 1.0]).parameters()))
    assert max(result["grads"]) < 1e-4
    assert len(result["stats"]) == 2 * 15 and max(result["stats"]) < 1e-5  # running mean and var of 15 BNs
    assert len(result["tracked"]) == 15 and all(result["tracked"])


def test_every_kernel_compiles_for_an_h100_without_one():
    # Triton's compiler and ptxas, no GPU: the dots' lowering and shared memory, which the
    # interpreter does not check. An H100 gives a block at most 227 KB of shared memory.
    pytest.importorskip("triton")
    from research import fused_block

    for channels in (16, 64):  # ResNet-110's first and last stage
        shared = fused_block.compile_for_gpu(channels, block_m=128, arch=90)
        assert len(shared) == 8
        assert all(shared[name] > 0 for name in shared if "conv" in name)  # operands staged in shared memory
        assert max(shared.values()) <= 227 * 1024, shared
