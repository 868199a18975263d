#!/usr/bin/env bash
# The GPU benchmark, for a lent H100/H200, in under 8 minutes. From the repository root:
#   mkdir -p .gpu && cp ../shared/data/cifar10-jpeg.tar.gz .gpu/   # real CIFAR; else synthetic
#   bash benchmarks/gpu.sh          (device tool: carry [".gpu"]; results under $OUT)
# Needs python3 with torch, torchvision, typer, rich, pandas, pyarrow, pyyaml (the device image has them).
set -uo pipefail
OUT=${OUT:-/tmp/robustres-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, typer; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'typer', typer.__version__)" | tee -a "$OUT/gpu.txt"

DATA=synthetic
if [ -f .gpu/cifar10-jpeg.tar.gz ]; then
  mkdir -p /tmp/rr-data && tar -xzf .gpu/cifar10-jpeg.tar.gz -C /tmp/rr-data && DATA=/tmp/rr-data/cifar10-jpeg
fi
echo "data: $DATA"

# 1. correctness on the device
timeout 60 python3 -m benchmarks.gpu_checks 2>&1 | tee "$OUT/checks.txt"

# 1b. can custom kernels beat cuDNN + separate passes here? One block, forward + backward, in Triton
#     kernels that fold BN into the convolutions (63 bytes per element against ~82 compiled), at the
#     ResNet-110 x10 stage shapes, against the engine's own block; first its correctness in bf16
timeout 20 python3 -m research.fused_block --check 2>&1 | tee "$OUT/fused_block.txt"
timeout 75 python3 -m research.fused_block 2>&1 | tee -a "$OUT/fused_block.txt"

# 2. throughput: the paper's script against the engine with packs of 1 and 10 (4: RESULTS.md)
timeout 105 python3 -m benchmarks.throughput --depths 20,110,218 --ks 1,10 \
  --data "$DATA" --images 20480 --steps 20 --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.txt"

# 2b. ResNet-110 x10, the bandwidth-bound case, side by side in one process: the blocks with h folded
#     into BN2 (the default) against h * BN(F) as a product of its own (research/bytes.py: 59.1 vs 67.4
#     MB per image, so up to 1.14x), the blocks in research/fused_block.py's Triton kernels
#     (research/floor.py: ~33 MB), and torch.compile inside the CUDA graph (research/bytes.py: 42.0 MB,
#     up to 1.4x; last: it compiles longest). A research script: benchmarks/throughput.py times only
#     the shipped engine.
timeout 140 python3 -m research.throughput_variants --depths 110 --ks 10 --unfolded --triton --compile --baseline-steps 5 \
  --steps 10 --images 10240 2>&1 | tee "$OUT/compile.txt"

# 2c. where a step's time goes, per kernel class (the time to set beside research/bytes.py's bytes)
timeout 40 python3 -m research.profile_step --depth 110 --k 10 2>&1 | grep -v "^STAGE\|^USDT" | tee "$OUT/profile.txt"

# 3. the real thing: one full CIFAR epoch of ten ResNet-110 runs through the CLI
if [ "$DATA" != synthetic ]; then
  timeout 55 python3 -m robustres train --dataset imagefolder --data-dir "$DATA" --depth 110 \
    --h 0.1,0.2,0.5,1,2 --seed 0,1 --epochs 1 --store /tmp/rr-store --json > "$OUT/train.json" 2> "$OUT/train.txt"
  echo "train exit $?"; tail -n 4 "$OUT/train.txt"
  python3 -c "import json; r=json.load(open('$OUT/train.json'))['runs']; print('ResNet-110 x10, 1 epoch:', [round(x['final_test_acc'] or 0, 3) for x in r], 'seconds per run', round(r[0]['seconds'], 1))"
fi

echo "== summary"
cat "$OUT/gpu.txt"; grep -E "ok|FAIL|drift|warning" "$OUT/checks.txt"; cat "$OUT/fused_block.txt"
grep -E "^ *[0-9]+ |projection|depth [0-9]+:|total:" "$OUT/throughput.txt"
grep -E "^ *110 " "$OUT/compile.txt"; head -n 12 "$OUT/profile.txt"; tail -n 5 "$OUT/profile.txt"
