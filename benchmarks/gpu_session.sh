#!/usr/bin/env bash
# The GPU checklist of docs/resnet54.md as one device call that ends inside its 600 s limit:
# the limit script (benchmarks/gpu_limit.py: environment, roofline, eager and graphed steps, cuDNN and
# layout A/B, correctness, concurrency, kernels; at most LIMIT_BUDGET seconds, default 290), then one
# resumable chunk of the Fashion-MNIST study, whose run folders come back packed in one tar.
#
#   bash benchmarks/gpu_session.sh [TOTAL_SECONDS]      # default 570; run from the repository root
#   GPU_COMPILE=max-autotune-no-cudagraphs GPU_ADAPTER=1 bash benchmarks/gpu_session.sh 570
#
# The study chunk trains with --cuda-graph when the limit script's graphed standard step ran (its line
# is in limit.log and the section did not fail). GPU_COMPILE (a torch.compile mode): the study chunk
# compiled. GPU_ADAPTER=1: also issue 22's check on torchvision's own ResNets and the adapter's step.
#
# Needs the Fashion-MNIST IDX files in data/fmnist (carried: the machine reaches no registry) and,
# to continue an earlier chunk, the committed run folders under runs/fmnist (unpacked from
# benchmarks/results/gpu/fmnist-study.tgz if present). Writes $OUT/limit.log, limit.json, kernels.txt,
# study.log and fmnist-study.tgz.
set -u
total=${1:-570}
start=$(date +%s)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
python=$(command -v python3)
elapsed() { echo $(( $(date +%s) - start )); }

if [ -f benchmarks/results/gpu/fmnist-study.tgz ] && [ ! -d runs/fmnist ]; then
    tar xzf benchmarks/results/gpu/fmnist-study.tgz
fi

budget=${LIMIT_BUDGET:-290}
timeout -k 10 $(( budget + 30 )) "$python" benchmarks/gpu_limit.py --out "$out" --budget "$budget"
echo "limit script done at $(elapsed) s"
graph=()
if grep -q "graphed standard, batch" "$out/limit.log" 2>/dev/null && ! grep -q "graphed: FAILED" "$out/limit.log"; then
    graph=(--cuda-graph)
fi
compile=()
if [ -n "${GPU_COMPILE:-}" ]; then
    compile=(--compile "$GPU_COMPILE")
fi

# Issue 22's check on torchvision's own ResNets (structure, state_dict names, exits, pruning), then the
# adapter's step against the plain loop at torchvision's width.
if [ "${GPU_ADAPTER:-0}" != 0 ]; then
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
        --arch homogeneous --device cuda --amp --out runs/fmnist --time-limit "$limit" --resume --quiet "${graph[@]}" "${compile[@]}" \
        2>&1 | tee "$out/study.log"
    echo "study chunk done at $(elapsed) s (time limit $limit s, ${graph[*]:-eager})"
fi
[ -d runs/fmnist ] && tar czf "$out/fmnist-study.tgz" runs/fmnist
ls -la "$out"
echo "total $(elapsed) s"
