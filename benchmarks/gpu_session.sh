#!/usr/bin/env bash
# The GPU checklist of docs/resnet54.md as one device call that ends inside its 600 s limit:
# the environment, the ResNet-54 throughput (standard / WS / full, bf16 autocast), then one
# resumable chunk of the Fashion-MNIST study, whose run folders come back packed in one tar.
#
#   bash benchmarks/gpu_session.sh [TOTAL_SECONDS]      # default 570; run from the repository root
#
# Needs the Fashion-MNIST IDX files in data/fmnist (carried: the machine reaches no registry) and,
# to continue an earlier chunk, the committed run folders under runs/fmnist (unpacked from
# benchmarks/results/gpu/fmnist-study.tgz if present). Writes $OUT/*.log and $OUT/fmnist-study.tgz.
set -u
total=${1:-570}
start=$(date +%s)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
python=$(command -v python3)
elapsed() { echo $(( $(date +%s) - start )); }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    "$python" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), 'numpy', numpy.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/env.log"

if [ -f benchmarks/results/gpu/fmnist-study.tgz ] && [ ! -d runs/fmnist ]; then
    tar xzf benchmarks/results/gpu/fmnist-study.tgz
fi

# Throughput first: it is the measurement the study's speed depends on. 3 rounds of 10 steps.
timeout 170 "$python" benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \
    --batch 128,256,512 --amp --steps 10 --rounds 3 2>&1 | tee "$out/throughput.log"
echo "throughput done at $(elapsed) s"

# The study: a time limit that leaves room for the epoch in flight, the final writes and the tar.
left=$(( total - $(elapsed) ))
limit=$(( left - 60 ))
if [ "$limit" -gt 30 ]; then
    timeout $(( left - 20 )) "$python" -m turnpike resnet54-study --dataset fashion-mnist --data data/fmnist \
        --arch homogeneous --device cuda --amp --out runs/fmnist --time-limit "$limit" --resume --quiet \
        2>&1 | tee "$out/study.log"
    echo "study chunk done at $(elapsed) s (time limit $limit s)"
fi
[ -d runs/fmnist ] && tar czf "$out/fmnist-study.tgz" runs/fmnist
ls -la "$out"
echo "total $(elapsed) s"
