"""Training throughput of the engine beside prototypes of its blocks, in one process: the research
counterpart of benchmarks/throughput.py, whose timing it reuses (its table, its (a) baseline).

Per depth and pack size K: (a) the paper's script and (c) the engine's fused pack as shipped, then
the same pack with
- --unfolded: blocks that compute h * BN(F) as a product of its own (research/variants.py's
  `unfolded()`, the engine's blocks before h was folded into BN2; research/bytes.py: 59.1 vs 67.4
  MB per ResNet-110 image),
- --triton: CUDA; blocks run in research/fused_block.py's Triton kernels where they apply
  (research/variants.py's `triton_blocks()`; research/floor.py: ~33 MB),
- --compile: the engine's own torch.compile inside the CUDA graph (research/bytes.py: 42.0 MB;
  last, as it compiles longest).

From the repository root:

    python3 -m research.throughput_variants --depths 110 --ks 10 --unfolded --triton --compile
    .venv/bin/python -m research.throughput_variants --depths 8 --ks 2 --unfolded --device cpu --steps 2
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import torch

from benchmarks.throughput import BATCH, HEADER, common_args, baseline, engine_rate, load_images, prepare, recorder, train_macs
from research.variants import triton_blocks, unfolded


def main() -> None:
    p = common_args(__doc__, depths="110", ks="10", steps=10, baseline_steps=5)
    p.add_argument("--unfolded", action="store_true",
                   help="also time packs whose blocks compute h * BN(F) as a separate product (the old blocks)")
    p.add_argument("--triton", action="store_true",
                   help="CUDA: also time fused packs whose blocks run in research/fused_block.py's kernels")
    p.add_argument("--compile", action="store_true", help="also time the fused pack under torch.compile")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    device, precision, name, peak = prepare(args.device, args.precision)
    cpu_data = load_images(args.data, args.images)
    data = cpu_data.to(device)

    rows = []
    print(f"# {date.today()} {name}, torch {torch.__version__}, engine precision {precision}, "
          f"batch {BATCH}, data {args.data}", flush=True)
    print(HEADER)
    for depth in (int(d) for d in args.depths.split(",")):
        a = baseline(depth, cpu_data.train_x, cpu_data.train_y, device, args.baseline_steps)
        record = recorder(depth, train_macs(depth), a, peak, rows)
        record("(a) paper script fp32", 1, a)
        for k in (int(k) for k in args.ks.split(",")):
            record("(b) engine K=1" if k == 1 else f"(c) engine K={k} fused", k,
                   engine_rate(depth, k, data, device, precision, True, args.steps))
            if args.unfolded:
                with unfolded():
                    record(f"    K={k} fused, h unfolded", k,
                           engine_rate(depth, k, data, device, precision, True, args.steps))
            if args.triton:
                with triton_blocks():
                    record(f"    K={k} fused, Triton blocks", k,
                           engine_rate(depth, k, data, device, precision, True, args.steps))
            if args.compile:
                record(f"    K={k} fused, compiled", k,
                       engine_rate(depth, k, data, device, precision, True, args.steps, compile_=True))
    if args.json:
        args.json.write_text(json.dumps({"device": name, "precision": precision, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
