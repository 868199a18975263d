"""Prototype: a 3x3 convolution that applies the preceding BN + ReLU as it loads its input and sums
its output's BN statistics before storing it (Triton, implicit GEMM, K models as groups).

Why: a fused pack's step is bound by memory traffic (benchmarks/floor.py). Between two
convolutions of a block, what `--compile` builds moves 10 bytes per activation element in three
passes: BN1 + ReLU (read y1, write a1), the cuDNN convolution (read a1, write y2) and the
statistics of y2 (read y2). This kernel moves 4: it reads y1 and writes y2. Whether custom kernels
can reach the issue's 20x target turns on how close such a kernel comes to the copy rate on these
small-channel grouped shapes, against cuDNN plus two passes. This measures that, forward only,
before anything is built on it; the engine does not use it.

Layout: NHWC (a channels_last [N, K*C, H, W] tensor), bf16. The GEMM of group g has one row per
output pixel, COUT columns and 9 * CIN reduction terms, taken tap by tap from shifted rows of the
input. Zero padding is applied after BN + ReLU, as the network's own padding is. Statistics are
written per program and summed afterwards, so they come out the same every run.

    python3 benchmarks/fused_conv.py                          # CUDA: time against cuDNN + passes
    TRITON_INTERPRET=1 python3 benchmarks/fused_conv.py --check   # any machine: correctness only
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

# The interpreter (TRITON_INTERPRET=1, no GPU) gets bf16 dots wrong and truncates when it rounds to
# bf16; there the kernel is checked in float32 (x, weights and y float32, no rounding inside), with
# float32 products ("ieee": TF32 is wrong there too).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _bn_relu_conv3x3(x_ptr, scale_ptr, shift_ptr, w_ptr, y_ptr, psum_ptr, psq_ptr,
                     M, H, W, HO, WO, CIN_ALL, COUT_ALL,
                     STRIDE: tl.constexpr, CIN: tl.constexpr, COUT: tl.constexpr, BLOCK_M: tl.constexpr,
                     PROLOGUE: tl.constexpr, BF16: tl.constexpr):
    pid = tl.program_id(0)
    g = tl.program_id(1)  # the model (group)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels, n * HO * WO + p * WO + q
    live = rows < M
    n = rows // (HO * WO)
    p = (rows // WO) % HO
    q = rows % WO
    ci = tl.arange(0, CIN)
    co = tl.arange(0, COUT)
    if PROLOGUE:
        scale = tl.load(scale_ptr + g * CIN + ci)
        shift = tl.load(shift_ptr + g * CIN + ci)
    acc = tl.zeros((BLOCK_M, COUT), dtype=tl.float32)
    for tap in tl.static_range(9):
        hi = p * STRIDE + tap // 3 - 1
        wi = q * STRIDE + tap % 3 - 1
        inside = live & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        src = ((n * H + hi) * W + wi) * CIN_ALL + g * CIN
        a = tl.load(x_ptr + src[:, None] + ci[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        if PROLOGUE:
            a = tl.maximum(a * scale[None, :] + shift[None, :], 0.0)
            a = tl.where(inside[:, None], a, 0.0)  # padding is zero after BN + ReLU, not ReLU(shift)
        w = tl.load(w_ptr + ((g * 9 + tap) * CIN + ci[:, None]) * COUT + co[None, :])
        if BF16:
            acc += tl.dot(a.to(tl.bfloat16), w)
        else:
            acc += tl.dot(a, w, input_precision="ieee")
    out = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rows[:, None] * COUT_ALL + g * COUT + co[None, :], out, mask=live[:, None])
    kept = tl.where(live[:, None], out.to(tl.float32), 0.0)  # statistics of the values stored
    tl.store(psum_ptr + pid * COUT_ALL + g * COUT + co, tl.sum(kept, axis=0))
    tl.store(psq_ptr + pid * COUT_ALL + g * COUT + co, tl.sum(kept * kept, axis=0))


def taps(weight: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """[K*COUT, CIN, 3, 3] grouped weights -> [K, 9, CIN, COUT]: each tap a [CIN, COUT] matrix."""
    cout, cin = weight.shape[0] // k, weight.shape[1]
    return weight.view(k, cout, cin, 9).permute(0, 3, 2, 1).contiguous().to(dtype)


def bn_relu_conv(x: torch.Tensor, weight: torch.Tensor, k: int, stride: int = 1,
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                 block_m: int = 128, num_warps: int = 4, num_stages: int = 3):
    """y = conv3x3(ReLU(x * scale + shift)) (or conv3x3(x) without scale), groups = k, and the
    per-channel sum and sum of squares of y. x: [N, K*CIN, H, W] channels_last, bf16 (float32 only
    to check the indexing where bf16 is not computed right: the interpreter)."""
    n, kc, h, w = x.shape
    cin, cout = kc // k, weight.shape[0] // k
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    rows = n * ho * wo
    programs = triton.cdiv(rows, block_m)
    y = torch.empty((n, k * cout, ho, wo), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    psum = torch.empty((programs, k * cout), dtype=torch.float32, device=x.device)
    psq = torch.empty_like(psum)
    prologue = scale is not None
    if not prologue:
        scale = shift = psum  # not read
    _bn_relu_conv3x3[(programs, k)](
        x, scale, shift, taps(weight, k, x.dtype), y, psum, psq, rows, h, w, ho, wo, kc, k * cout,
        STRIDE=stride, CIN=cin, COUT=cout, BLOCK_M=block_m, PROLOGUE=prologue, BF16=x.dtype == torch.bfloat16,
        num_warps=num_warps, num_stages=num_stages)
    return y, psum.sum(0), psq.sum(0)


def reference(x, weight, k, stride=1, scale=None, shift=None):
    """The same with PyTorch ops: BN + ReLU pass, a grouped convolution, a statistics pass."""
    a = x
    if scale is not None:
        a = torch.relu(x.float() * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).to(x.dtype)
    y = F.conv2d(a, weight.to(x.dtype), stride=stride, padding=1, groups=k)
    f = y.float()
    return y, f.sum((0, 2, 3)), (f * f).sum((0, 2, 3))


def example(n, k, cin, cout, hw, device, seed=0, dtype=torch.bfloat16):
    """Inputs shaped like a block's conv2: y1 ~ N(0.3, 1), a BN with shifts of both signs."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.randn(n, k * cin, hw, hw, generator=g) + 0.3).to(dtype)
    weight = torch.randn(k * cout, cin, 3, 3, generator=g) / (3 * cin ** 0.5)
    scale = 0.5 + torch.rand(k * cin, generator=g)
    shift = torch.randn(k * cin, generator=g) * 0.5
    to = dict(device=device)
    return (x.to(**to).contiguous(memory_format=torch.channels_last), weight.to(**to), scale.to(**to),
            shift.to(**to))


def compare(n=2, k=2, cin=16, cout=16, hw=8, stride=1, prologue=True, device="cpu", block_m=32,
            dtype=torch.bfloat16):
    """Largest differences of y (relative to its largest value) and of the two sums (relative)."""
    x, weight, scale, shift = example(n, k, cin, cout, hw, device, dtype=dtype)
    sc, sh = (scale, shift) if prologue else (None, None)
    y, s1, s2 = bn_relu_conv(x, weight, k, stride, sc, sh, block_m=block_m)
    ry, r1, r2 = reference(x, weight, k, stride, sc, sh)
    dy = ((y.float() - ry.float()).abs().max() / ry.float().abs().max()).item()
    d1 = ((s1 - r1).abs().max() / r1.abs().max()).item()
    d2 = ((s2 - r2).abs().max() / r2.abs().max()).item()
    return dy, d1, d2


def _time(fn, reps: int) -> float:
    """Seconds per call of fn, replayed from a CUDA graph as the engine runs its step (no launch
    overhead from Python in the number)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        graph.replay()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / reps / 1e3


CONFIGS = ((64, 4, 2), (128, 4, 3), (128, 8, 3), (256, 8, 3))  # BLOCK_M, warps, stages: few, each compiles


def bench(k: int, batch: int, reps: int) -> None:
    """CUDA: the three stage shapes of a ResNet-110 pack, fused kernel against cuDNN + two passes."""
    dev = torch.device("cuda")
    bn_relu = torch.compile(lambda x, s, b: torch.relu(x * s + b).to(torch.bfloat16))  # one pass, as inductor
    stats = torch.compile(lambda y: (y.float().sum((0, 2, 3)), y.float().square().sum((0, 2, 3))))
    print(f"pack of {k}, batch {batch} per model, bf16, channels_last; bytes counted: activations read "
          f"and written once per pass")
    print(f"{'shape':<24} {'separate us':>11} {'of it conv':>10} {'fused us':>9} {'config':>12} "
          f"{'sep GB/s':>9} {'fused GB/s':>10} {'speedup':>8} {'max err':>8}")
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        x, weight, scale, shift = example(batch, k, c, c, hw, dev)
        wb = weight.to(torch.bfloat16)
        s4, b4 = scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)

        def separate():
            a = bn_relu(x, s4, b4)
            y = F.conv2d(a, wb, padding=1, groups=k)
            return stats(y)

        a = bn_relu(x, s4, b4)
        t_sep = _time(separate, reps)
        t_conv = _time(lambda: F.conv2d(a, wb, padding=1, groups=k), reps)
        best = None
        for block_m, warps, stages in CONFIGS:
            try:
                t = _time(lambda: bn_relu_conv(x, weight, k, 1, scale, shift, block_m, warps, stages), reps)
            except Exception as e:  # a config the compiler rejects (e.g. out of shared memory)
                print(f"  config {block_m}/{warps}/{stages}: {type(e).__name__}")
                continue
            if best is None or t < best[0]:
                best = (t, f"{block_m}/{warps}/{stages}")
        y, s1, s2 = bn_relu_conv(x, weight, k, 1, scale, shift)
        ry, r1, r2 = reference(x, weight, k, 1, scale, shift)
        err = max(((y.float() - ry.float()).abs().max() / ry.float().abs().max()).item(),
                  ((s1 - r1).abs().max() / r1.abs().max()).item())
        elements = x.numel()
        sep_bytes, fused_bytes = 10 * elements, 4 * elements
        print(f"{f'{k}x{c} ch, {hw}x{hw}':<24} {t_sep * 1e6:11.1f} {t_conv * 1e6:10.1f} {best[0] * 1e6:9.1f} "
              f"{best[1]:>12} {sep_bytes / t_sep / 1e9:9.0f} {fused_bytes / best[0] / 1e9:10.0f} "
              f"{t_sep / best[0]:7.2f}x {err:8.1e}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="correctness against PyTorch ops on small shapes")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args()
    if not torch.cuda.is_available() and not INTERPRETED:
        raise SystemExit("fused_conv.py: no CUDA device; TRITON_INTERPRET=1 runs the correctness check on the CPU")
    if args.check or not torch.cuda.is_available():
        device = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"
        dtype = torch.float32 if INTERPRETED else torch.bfloat16
        print(f"{device}, {str(dtype)[6:]}: largest differences from PyTorch's ops, relative")
        for cin, cout, stride, prologue in ((16, 16, 1, True), (16, 32, 2, False), (32, 32, 1, True)):
            dy, d1, d2 = compare(cin=cin, cout=cout, stride=stride, prologue=prologue, device=device, dtype=dtype)
            print(f"{cin}->{cout} stride {stride} {'BN+ReLU prologue' if prologue else 'no prologue':<16} "
                  f"y {dy:.1e}  sum {d1:.1e}  sum of squares {d2:.1e}")
        return
    bench(args.k, args.batch, args.reps)


if __name__ == "__main__":
    main()
