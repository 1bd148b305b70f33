"""The measuring tools of ``gpu_limit.py``: its report (lines naming the device, numbers, the time budget), the
steps it compares, the byte model of a step (bytes every aten operator reads and writes), the device's peaks
and the profiler's account of a step."""
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import turnpike as tp
from turnpike.backends import make_backend

from _plain_resnet import MEAN, STD, WEIGHT_DECAY, PlainStep, synthetic_data


#: (memory bandwidth in bytes/s, dense bf16 peak in FLOP/s) of cards by the name torch reports
SPECIFICATIONS = {"H200": (4.8e12, 989e12), "H100 80GB HBM3": (3.35e12, 989e12), "H100 SXM": (3.35e12, 989e12),
                  "H100 NVL": (3.9e12, 835e12), "H100 PCIe": (2.0e12, 756e12), "A100-SXM4-80GB": (2.039e12, 312e12),
                  "A100-SXM4-40GB": (1.555e12, 312e12), "A100 80GB PCIe": (1.935e12, 312e12)}

class Report:
    """Lines to stdout and OUT/limit.log as they come, numbers to OUT/limit.json, each line naming the device."""

    def __init__(self, out: Path, device_name: str, budget: float):
        self.out, self.tag, self.numbers = out, f"[{device_name}]", {}
        out.mkdir(parents=True, exist_ok=True)
        self.log = (out / "limit.log").open("w")
        self.started, self.budget = time.perf_counter(), budget

    def line(self, text: str) -> None:
        text = f"{self.tag} {text}"
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def record(self, section: str, **numbers) -> None:
        self.numbers.setdefault(section, {}).update(numbers)
        (self.out / "limit.json").write_text(json.dumps(self.numbers, indent=1, default=str))

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    @contextlib.contextmanager
    def section(self, name: str, needs: float):
        """Run the section if ``needs`` seconds are left; report a failure as a line and go on."""
        if self.left() < needs:
            self.line(f"{name}: skipped, {self.left():.0f} s of the budget left (needs about {needs:.0f})")
            yield False
            return
        began = time.perf_counter()
        try:
            yield True
        except Exception as error:                                         # noqa: BLE001 (reported, next section)
            self.line(f"{name}: FAILED {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        self.line(f"{name}: {time.perf_counter() - began:.1f} s")


class Bench:
    """The steps being compared, built alike: synthetic uint8 data on the device, crop + flip, SGD."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.amp = device.type == "cuda"
        self.cuda = device.type == "cuda"

    def step(self, variant: str, batch: int, *, graphed: bool, channels_last: bool = True,
             cudnn_benchmark=True, blocks=None, widths=None):
        """A step object (``evaluate(phase, step)``, ``update(step)``) of ``variant`` at ``batch``."""
        blocks, widths = blocks or self.args.blocks, widths or self.args.widths
        if variant == "plain":
            return PlainStep(widths, blocks, batch, self.device, amp=self.amp, channels_last=channels_last,
                             graphed=graphed)
        torch.manual_seed(0)
        net = tp.preact_resnet(blocks_per_stage=blocks, widths=widths, in_channels=3, num_classes=10, exits=variant)
        images, labels = synthetic_data(batch)
        loss = tp.CrossEntropy(num_classes=10)
        penalty = tp.InputPenalty(WEIGHT_DECAY / 2)
        stage = penalty if variant == "standard" else 0.02 * loss + penalty
        ocp = tp.OCP(net, images, labels.numpy(), stage_cost=stage, terminal_cost=loss)
        settings = {"normalise": ((MEAN,) * 3, (STD,) * 3), "amp": self.amp, "channels_last": channels_last,
                    "sync_every": 10 ** 9, "cuda_graph": graphed, "cudnn_benchmark": cudnn_benchmark,
                    "augment": lambda x, generator: tp.data.augment(x, generator=generator)}
        backend = make_backend(ocp, seed=0, batch_size=batch, device=self.device, settings=settings)
        backend.begin_phase(0, backend.methods["sgd"], 10 ** 9, {**backend.methods["sgd"].defaults, "lr": 0.01})
        return backend

    def synchronise(self):
        if self.cuda:
            torch.cuda.synchronize()

    def run(self, step, steps: int, first: int) -> float:
        """Seconds per step over ``steps`` steps (CUDA events on a GPU), J kept on the device."""
        values = []
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            began = time.perf_counter()
        for k in range(first, first + steps):
            values.append(step.evaluate(0, k))
            step.update(k)
        if self.cuda:
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            seconds = time.perf_counter() - began
        if not bool(torch.isfinite(torch.stack(values)).all()):
            raise RuntimeError("a step diverged")
        return seconds / steps

    def warm(self, step, graphed: bool) -> float:
        """Warm-up steps (allocations, cuDNN choices, the graphs' capture); the seconds of the capturing step."""
        warm_steps = 3
        self.run(step, warm_steps, 0)
        self.synchronise()
        began = time.perf_counter()
        self.run(step, 1, warm_steps)                     # graphed: captures, then replays once
        self.synchronise()
        capture = time.perf_counter() - began
        self.run(step, 1, warm_steps + 1)
        return capture if graphed else float("nan")

    def release(self):
        if self.cuda:
            torch.cuda.empty_cache()


class TrafficRecorder(TorchDispatchMode):
    """Bytes every aten operator reads (tensor arguments) and writes (tensor outputs), each tensor once per call."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {}
        for t in torch.utils._pytree.tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                seen[id(t)] = t.numel() * t.element_size()
        self.bytes += sum(seen.values())
        return out


def step_bytes(bench, variant: str, batch: int) -> int:
    step = bench.step(variant, batch, graphed=False)
    bench.run(step, 1, 0)
    recorder = TrafficRecorder()
    with recorder:
        step.evaluate(0, 1)
        step.update(1)
    return recorder.bytes


def byte_model(bench, variant: str) -> tuple[float, float]:
    """(bytes per image, bytes per step) of the eager step: recorded at batches 2 and 4, linear in the batch."""
    small, large = step_bytes(bench, variant, 2), step_bytes(bench, variant, 4)
    per_image = (large - small) / 2
    return per_image, small - 2 * per_image


def specification(name: str):
    for key, spec in SPECIFICATIONS.items():
        if key in name:
            return spec
    return None


def measured_peaks(bench) -> tuple[float, float]:
    """(copy bandwidth in bytes/s: read + write of a large buffer, matrix-product FLOP/s) of this device."""
    size, n = (2 ** 28, 8192) if bench.cuda else (2 ** 22, 512)
    source = torch.empty(size, dtype=torch.float32, device=bench.device)
    target = torch.empty_like(source)
    dtype = torch.bfloat16 if bench.cuda else torch.float32
    a = torch.randn(n, n, device=bench.device, dtype=dtype)
    b = torch.randn(n, n, device=bench.device, dtype=dtype)
    timings = []
    for work in (lambda: target.copy_(source), lambda: a @ b):
        work()
        bench.synchronise()
        began = time.perf_counter()
        for _ in range(5):
            work()
        bench.synchronise()
        timings.append((time.perf_counter() - began) / 5)
    return 2 * source.numel() * 4 / timings[0], 2 * n ** 3 / timings[1]


def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def profile_step(bench, step, steps: int = 3, first: int = 100):
    """(device busy s per step, kernels per step, aten calls per step, profiler) over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.cuda else [])
    with profile(activities=activities) as prof:
        bench.run(step, steps, first)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6 / steps if kernels else float("nan")
    calls = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / steps
    return busy, len(kernels) / steps, calls, prof


#: kernel classes by the first keyword their name contains (weight and data gradients before the forward)
KERNEL_CLASSES = (("conv weight gradient", ("wgrad",)), ("conv data gradient", ("dgrad",)),
                  ("conv forward", ("fprop", "conv", "implicit", "winograd")),
                  ("batch norm", ("batch_norm", "batchnorm", "bn_", "welford")),
                  ("optimiser", ("sgd", "adam", "multi_tensor", "foreach")),
                  ("matrix product", ("gemm", "cutlass", "sm90", "sm80")),
                  ("reduction", ("reduce",)), ("elementwise", ("elementwise", "vectorized", "unrolled")),
                  ("copy and fill", ("copy", "memcpy", "memset", "fill")))


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for label, keys in KERNEL_CLASSES:
        if any(key in lowered for key in keys):
            return label
    return "other"
