#!/usr/bin/env bash
# The GPU checklist of docs/resnet54.md as one device call that ends inside its 600 s limit:
# the environment, the ResNet-54 throughput (standard / WS / full, bf16 autocast), the adapter on
# torchvision's own ResNets (issue 22), then one resumable chunk of the Fashion-MNIST study, whose run
# folders come back packed in one tar.
#
#   bash benchmarks/gpu_session.sh [TOTAL_SECONDS]      # default 570; run from the repository root
#   GPU_COMPILE=reduce-overhead GPU_BATCH=512 bash benchmarks/gpu_session.sh 520
#
# GPU_COMPILE (a torch.compile mode): time the eager step first, then the compiled one, at the
# batch sizes GPU_BATCH (default 128,256,512), and train the study chunk compiled.
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
batch=${GPU_BATCH:-128,256,512}
timeout -k 10 170 "$python" benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \
    --batch "$batch" --amp --steps 10 --rounds 3 2>&1 | tee "$out/throughput.log"
echo "throughput done at $(elapsed) s"
compile=()
if [ -n "${GPU_COMPILE:-}" ]; then
    compile=(--compile "$GPU_COMPILE")
    # compiling the four variants (forward and backward, 54 blocks) took over 330 s on the H200 on
    # 2026-12-04 (no round was timed): one variant per call, or CUDA graphs without inductor
    # (SIGTERM waits for the step boundary; -k kills a run still compiling)
    timeout -k 10 330 "$python" benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \
        --batch "$batch" --amp --steps 10 --rounds 3 "${compile[@]}" 2>&1 | tee "$out/throughput-compiled.log"
    echo "compiled throughput done at $(elapsed) s"
fi

# Issue 22's check on torchvision's own ResNets (structure, state_dict names, exits, pruning), then the
# adapter's step against the plain loop at torchvision's width; GPU_ADAPTER=0 skips both.
if [ "${GPU_ADAPTER:-1}" != 0 ]; then
    timeout -k 10 90 "$python" benchmarks/torchvision_check.py --device cuda --out "$out/torchvision_check.json" \
        2>&1 | tee "$out/torchvision_check.log"
    timeout -k 10 120 "$python" benchmarks/residual_network.py --device cuda --amp --base 64 --batch 256 \
        --steps 8 --rounds 3 2>&1 | tee "$out/residual_network.log"
    echo "adapter checks done at $(elapsed) s"
fi

# The study: a time limit that leaves room for the epoch in flight, the final writes and the tar.
left=$(( total - $(elapsed) ))
limit=$(( left - 60 ))
if [ "$limit" -gt 30 ]; then
    timeout -k 15 $(( left - 30 )) "$python" -m turnpike resnet54-study --dataset fashion-mnist --data data/fmnist \
        --arch homogeneous --device cuda --amp --out runs/fmnist --time-limit "$limit" --resume --quiet "${compile[@]}" \
        2>&1 | tee "$out/study.log"
    echo "study chunk done at $(elapsed) s (time limit $limit s)"
fi
[ -d runs/fmnist ] && tar czf "$out/fmnist-study.tgz" runs/fmnist
ls -la "$out"
echo "total $(elapsed) s"
