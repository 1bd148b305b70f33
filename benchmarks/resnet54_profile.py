"""Where a ResNet-54 training step spends its time: torch.profiler over a few steps of each variant.

    PYTHONPATH=. python benchmarks/resnet54_profile.py --device cuda --amp --batch 128 [--variants plain,standard]

Uses the steps of ``resnet54_throughput.py`` (its ``plain`` baseline and the turnpike variants, same
options). For each variant prints the wall time per step, the device's busy time per step (sum of
kernel times: a step far longer than it is bound by the host's launches, not the GPU), the count
of kernels and of operator calls per step, and the operators with the most self time on host and
device.
"""
import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--variants", default="plain,standard,ws,full")
parser.add_argument("--steps", type=int, default=5, help="profiled steps per variant")
parser.add_argument("--rows", type=int, default=12)
own, rest = parser.parse_known_args()
sys.argv = [sys.argv[0], *rest]
import resnet54_throughput as bench   # noqa: E402  (parses the shared options: --device, --batch, --amp, ...)

device, batch = bench.device, int(bench.args.batch.split(",")[0])
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
for variant in own.variants.split(","):
    step = bench.backend_for(variant, batch)
    bench.step_time(step, 3, 0)                                     # warm-up
    with profile(activities=activities) as prof:
        seconds = bench.step_time(step, own.steps, 3)
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6 / own.steps if kernels else float("nan")
    calls = sum(e.count for e in events if e.key.startswith("aten::")) / own.steps
    print(f"\n== {variant}, batch {batch}: {seconds * 1e3:.1f} ms a step under the profiler, device busy "
          f"{busy * 1e3:.1f} ms, {len(kernels) / own.steps:.0f} kernels and {calls:.0f} aten calls a step")
    print(events.table(sort_by="self_cpu_time_total", row_limit=own.rows))
    if kernels:
        print(events.table(sort_by="self_device_time_total", row_limit=own.rows))
    # unprofiled, for the overhead the profiler adds
    started = time.perf_counter()
    bench.step_time(step, own.steps, 3 + own.steps)
    print(f"{variant}: {(time.perf_counter() - started) / own.steps * 1e3:.1f} ms a step without the profiler")
