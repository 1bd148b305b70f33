"""ResNet-54 training against the device's limit, in one call (issue 30): every line names the device.

    PYTHONPATH=. python benchmarks/gpu_limit.py --out "$OUT"            # on a GPU machine, under 5 minutes
    .venv/bin/python benchmarks/gpu_limit.py --tiny --out /tmp/limit    # every section, tiny, on a CPU

Each line is printed (and appended to OUT/limit.log) as soon as it is measured; a section that would
overrun ``--budget`` seconds is skipped with a line saying so. Sections:

- env: device, its memory bandwidth and bf16 peak (the card's specification where known, and measured:
  a device-to-device copy, a large bf16 matrix product), host CPU and cores, torch/CUDA/cuDNN;
- roofline: multiply-adds of the paper's ResNet-54 (16/32/64, 3 x 18 blocks, 32 x 32: ``exit_costs``) and of
  the timed network, FLOPs per trained image (6 per multiply-add: forward, and twice that backward),
  bytes per trained image of the eager step (every aten operator reading its tensor arguments and writing
  its outputs once, recorded at two batch sizes and split into a per-image part and a per-step part), and
  the ceilings in images/s these give;
- eager: the plain loop and turnpike's standard step at ``--batch``, and the profiler's device busy time,
  kernels and operator calls per step;
- graphed: plain (torch's whole-network capture), standard, WS and full with ``cuda_graph=True``: capture
  time, step time, GPU idle share, TB/s of the byte model, % of the roofline; then standard at
  ``--batches`` with peak memory;
- cudnn: standard graphed with ``cudnn.benchmark`` off/on and channels-last/NCHW; each stage's blocks
  forward and backward in NHWC and NCHW;
- correctness: no host synchronisation in the warm-up steps (``torch.cuda.set_sync_debug_mode("error")``);
  graphed vs eager weights after ``--compare-steps`` steps from one state, beside eager vs eager;
- concurrent: four graphed batch-128 runs, each on its own CUDA stream, together;
- kernels: the graphed standard step's kernels grouped by class, and the top ones (OUT/kernels.txt).

OUT receives limit.log, limit.json (every number) and kernels.txt: three files. The measuring tools (report,
steps, byte model, peaks, profiler) are in `_limit_tools.py`.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

import turnpike as tp

sys.path.insert(0, str(Path(__file__).parent))
from _limit_tools import (Bench, Report, byte_model, host_cpu, kernel_class, measured_peaks,  # noqa: E402
                          profile_step, specification)
from _plain_resnet import PlainPreActResNet  # noqa: E402

VARIANTS = ("plain", "standard", "ws", "full")
PAPER_BLOCKS, PAPER_WIDTHS, IMAGE = 18, (16, 32, 64), 32


def options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for limit.log, limit.json, kernels.txt")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for the whole call")
    parser.add_argument("--tiny", action="store_true", help="1 block per stage, width 4, batch 8: a CPU check")
    parser.add_argument("--blocks", type=int, default=PAPER_BLOCKS, help="blocks per stage")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--batches", default="128,1024,2048", help="further batch sizes of the graphed step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--compare-steps", type=int, default=20)
    args = parser.parse_args()
    if args.tiny:
        args.blocks, args.batch, args.batches, args.steps, args.compare_steps = 1, 8, "4,16", 2, 4
    args.widths = (4, 4, 4) if args.tiny else PAPER_WIDTHS
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def roofline(report, bench, args, peaks):
    """Multiply-adds, FLOPs and bytes per image and the ceilings they give, for the paper's network and the timed one."""
    bandwidth, flops = peaks
    paper = tp.preact_resnet(blocks_per_stage=PAPER_BLOCKS, exits="ws")
    costs = paper.exit_costs(IMAGE, IMAGE)
    exits_extra = costs["early_exit"][-1] - costs["network"]
    report.line(f"roofline: the paper's ResNet-54 (16/32/64, 3 x 18 blocks, {IMAGE}x{IMAGE}): {costs['network']:,} "
                f"multiply-adds forward, {6 * costs['network'] / 1e9:.2f} GFLOP per trained image; WS exits "
                f"+{100 * exits_extra / costs['network']:.1f} %")
    report.record("roofline", paper_multiply_adds=costs["network"], paper_exit_multiply_adds=exits_extra)
    timed = tp.preact_resnet(blocks_per_stage=args.blocks, widths=args.widths, exits="ws")
    macs = timed.exit_costs(IMAGE, IMAGE)["network"]
    models = {}
    for variant in ("standard", "ws"):
        per_image, per_step = byte_model(bench, variant)
        models[variant] = (per_image, per_step)
    per_image, per_step = models["standard"]
    at_batch = per_image + per_step / args.batch
    ceiling = min(bandwidth / at_batch, flops / (6 * macs))
    report.line(f"roofline: timed network {args.blocks} blocks/stage, widths {args.widths}: {macs:,} multiply-adds, "
                f"{6 * macs / 1e9:.3f} GFLOP/image; eager-step bytes {per_image / 1e6:.1f} MB/image + "
                f"{per_step / 1e6:.1f} MB/step (standard), {models['ws'][0] / 1e6:.1f} MB/image (WS) = "
                f"{at_batch / 1e6:.1f} MB/image at batch {args.batch}; ceilings at {bandwidth / 1e12:.2f} TB/s and "
                f"{flops / 1e12:.3g} TFLOP/s: memory {bandwidth / at_batch:,.0f}, compute {flops / (6 * macs):,.0f}"
                f" images/s")
    report.record("roofline", timed_multiply_adds=macs, bytes_per_image=per_image, bytes_per_step=per_step,
                  ws_bytes_per_image=models["ws"][0], ceiling_images_per_s=ceiling)
    return {variant: (image, step) for variant, (image, step) in models.items()}, ceiling


def main():
    args = options()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report = Report(Path(args.out), name, args.budget)
    bench = Bench(args, device)
    kernels_file = Path(args.out) / "kernels.txt"
    kernels_file.write_text("")
    spec = specification(name) if bench.cuda else None

    with report.section("env", 20) as go:
        if go:
            copy, product = measured_peaks(bench)
            cores = len(os.sched_getaffinity(0))          # the cores this process may use (Linux)
            cudnn = torch.backends.cudnn.version() if bench.cuda else None
            report.line(f"env: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}; host "
                        f"{host_cpu()}, {cores} cores; measured copy {copy / 1e12:.2f} TB/s, "
                        f"{'bf16' if bench.cuda else 'float32'} product {product / 1e12:.1f} TFLOP/s; specification "
                        + (f"{spec[0] / 1e12:.2f} TB/s, {spec[1] / 1e12:.0f} TFLOP/s bf16" if spec else "unknown"))
            report.record("env", device=name, torch=torch.__version__, cuda=torch.version.cuda, cudnn=cudnn,
                          host=host_cpu(), cores=cores, copy_bytes_per_s=copy, product_flops=product,
                          specification=spec)
    peaks = spec or (report.numbers.get("env", {}).get("copy_bytes_per_s", 1e12),
                     report.numbers.get("env", {}).get("product_flops", 1e14))
    models, ceiling = {"standard": (float("nan"), 0.0)}, float("nan")
    with report.section("roofline", 20) as go:
        if go:
            models, ceiling = roofline(report, bench, args, peaks)

    def bytes_of(variant, batch):
        image, step = models.get(variant, models["standard"])
        return image * batch + step

    batch = args.batch
    with report.section("eager", 40) as go:
        if go:
            for variant in ("plain", "standard"):
                step = bench.step(variant, batch, graphed=False)
                bench.warm(step, False)
                seconds = bench.run(step, args.steps, 10)
                busy, kernels, calls, _ = profile_step(bench, step)
                report.line(f"eager {variant}, batch {batch}: {seconds * 1e3:.2f} ms/step, {batch / seconds:,.0f} "
                            f"images/s; device busy {busy * 1e3:.2f} ms/step ({100 * busy / seconds:.0f} %), "
                            f"{kernels:.0f} kernels and {calls:.0f} aten calls a step")
                report.record("eager", **{f"{variant}_s": seconds, f"{variant}_busy_s": busy,
                                          f"{variant}_kernels": kernels})
                del step
                bench.release()

    graphed_times = {}
    with report.section("graphed", 60) as go:
        if go:
            if not bench.cuda:
                report.line("graphed: no CUDA here, so each 'graphed' step below is the graph-ready step run eagerly")
            for variant in VARIANTS:
                step = bench.step(variant, batch, graphed=True)
                capture = bench.warm(step, True)
                seconds = bench.run(step, args.steps, 10)
                busy, kernels, _, prof = profile_step(bench, step)
                graphed_times[variant] = seconds
                moved = bytes_of("ws" if variant in ("ws", "full") else "standard", batch) / seconds
                eager = report.numbers.get("eager", {}).get(f"{variant}_s")
                idle = f"{100 * max(0.0, 1 - busy / seconds):.0f} %" if bench.cuda else "n/a"
                report.line(f"graphed {variant}, batch {batch}: capture {capture:.2f} s, {seconds * 1e3:.2f} ms/step, "
                            f"{batch / seconds:,.0f} images/s" + (f" ({eager / seconds:.2f}x eager)" if eager else "")
                            + f"; GPU idle {idle}, {kernels:.0f} kernels a step, "
                            f"{moved / 1e12:.2f} TB/s of the byte model, {100 * batch / seconds / ceiling:.1f} % of the"
                            f" roofline")
                report.record("graphed", **{f"{variant}_s": seconds, f"{variant}_capture_s": capture,
                                            f"{variant}_busy_s": busy})
                if variant == "standard":
                    kernel_table(report, prof, kernels_file, args.steps)
                del step, prof
                bench.release()
            if "standard" in graphed_times:
                report.line("graphed ratios, batch %d: " % batch + ", ".join(
                    f"{v}/standard {graphed_times[v] / graphed_times['standard']:.3f}" for v in ("ws", "full", "plain")
                    if v in graphed_times))
            for other in args.batches:
                if bench.cuda:
                    torch.cuda.reset_peak_memory_stats()
                step = bench.step("standard", other, graphed=True)
                bench.warm(step, True)
                seconds = bench.run(step, args.steps, 10)
                peak = torch.cuda.max_memory_allocated() / 2 ** 30 if bench.cuda else float("nan")
                report.line(f"graphed standard, batch {other}: {seconds * 1e3:.2f} ms/step, {other / seconds:,.0f} "
                            f"images/s, peak memory {peak:.2f} GiB")
                report.record("graphed", **{f"standard_batch{other}_s": seconds, f"standard_batch{other}_gib": peak})
                del step
                bench.release()

    with report.section("cudnn", 60) as go:
        if go:
            for benchmark in (False, True):
                for channels_last in (False, True):
                    step = bench.step("standard", batch, graphed=True, channels_last=channels_last,
                                      cudnn_benchmark=benchmark)
                    bench.warm(step, True)
                    seconds = bench.run(step, args.steps, 10)
                    report.line(f"cudnn.benchmark {benchmark}, {'NHWC' if channels_last else 'NCHW'}: graphed standard"
                                f" {seconds * 1e3:.2f} ms/step, {batch / seconds:,.0f} images/s")
                    report.record("cudnn", **{f"benchmark_{benchmark}_nhwc_{channels_last}_s": seconds})
                    del step
                    bench.release()
            stage_layouts(report, bench, args)

    with report.section("correctness", 60) as go:
        if go:
            correctness(report, bench, args)

    with report.section("concurrent", 40) as go:
        if go:
            concurrent(report, bench, args, graphed_times)
    report.line(f"done in {args.budget - report.left():.0f} s")


def kernel_table(report, prof, path: Path, steps: int) -> None:
    """The step's kernels grouped by class (a line) and the top ones (kernels.txt)."""
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not kernels:          # a CPU: the operators instead
        with path.open("a") as stream:
            stream.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20) + "\n")
        report.line("kernels: no CUDA kernels on this device; the top operators are in kernels.txt")
        return
    classes = {}
    for event in kernels:
        label = kernel_class(event.key)
        classes[label] = classes.get(label, 0.0) + event.self_device_time_total / steps
    total = sum(classes.values())
    report.line("kernels of the graphed standard step: " + ", ".join(
        f"{label} {100 * t / total:.0f} %" for label, t in sorted(classes.items(), key=lambda kv: -kv[1])))
    with path.open("a") as stream:
        stream.write(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25) + "\n")
        for event in sorted(kernels, key=lambda e: -e.self_device_time_total)[:25]:
            stream.write(f"{kernel_class(event.key):22s} {event.self_device_time_total / steps:9.1f} us/step "
                         f"{event.count // steps:5d}x  {event.key[:120]}\n")
    report.record("kernels", **{label: t for label, t in classes.items()})


def stage_layouts(report, bench, args):
    """Each stage's blocks, forward and backward, in NHWC and NCHW (cuDNN's choice of kernels per layout)."""
    torch.manual_seed(0)
    net = PlainPreActResNet(args.widths, args.blocks).to(bench.device)
    c_in = args.widths[0]
    for stage, width in enumerate(args.widths):
        size = IMAGE if stage == 0 else IMAGE >> (stage - 1)          # the first block of stages 1, 2 strides
        blocks = net.blocks[stage * args.blocks:(stage + 1) * args.blocks]
        x = torch.randn(args.batch, c_in, size, size, device=bench.device)
        times = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            blocks.to(memory_format=layout)
            inputs = x.contiguous(memory_format=layout).requires_grad_()
            for repeat in range(2 + args.steps):
                if repeat == 2:
                    bench.synchronise()
                    began = time.perf_counter()
                with torch.autocast(bench.device.type, dtype=torch.bfloat16, enabled=bench.amp):
                    out = blocks(inputs)
                out.float().sum().backward()
            bench.synchronise()
            times[layout] = (time.perf_counter() - began) / args.steps
        report.line(f"stage {stage} ({args.blocks} blocks, {c_in}->{width} channels, {size}x{size} in): forward+"
                    f"backward NCHW {times[torch.contiguous_format] * 1e3:.2f} ms, NHWC "
                    f"{times[torch.channels_last] * 1e3:.2f} ms (NHWC/NCHW "
                    f"{times[torch.channels_last] / times[torch.contiguous_format]:.2f})")
        report.record("layouts", **{f"stage{stage}_nchw_s": times[torch.contiguous_format],
                                    f"stage{stage}_nhwc_s": times[torch.channels_last]})
        c_in = width


def correctness(report, bench, args):
    """No host sync while warming up; graphed vs eager weights after a few steps, beside eager vs eager."""
    batch = min(args.batch, 128)
    if bench.cuda:
        # steps 0 and 4 draw an epoch's permutation (4 batches an epoch: a host-to-device copy, once an epoch) and
        # step 3 captures (torch synchronises the device around a capture); the others run under "error"
        step = bench.step("standard", batch, graphed=True)
        checked = {1: "warm-up steps 1-2", 2: "warm-up steps 1-2", 5: "replayed steps 5-7", 6: "replayed steps 5-7",
                   7: "replayed steps 5-7"}
        verdicts = {}
        for k in range(8):                            # not bench.run: its divergence check reads J back
            label = checked.get(k)
            if label is not None:
                torch.cuda.set_sync_debug_mode("error")
            try:
                step.evaluate(0, k)
                step.update(k)
                if label is not None:
                    verdicts.setdefault(label, "none")
            except RuntimeError as error:
                if label is None:
                    raise
                verdicts[label] = str(error).splitlines()[0]
            finally:
                torch.cuda.set_sync_debug_mode(0)
        report.line("correctness: host synchronisations in the graphed standard step (sync debug mode 'error'): "
                    + "; ".join(f"{label}: {verdict}" for label, verdict in verdicts.items()))
        report.record("correctness", **{label.split()[0] + "_sync": verdict for label, verdict in verdicts.items()})
    else:
        report.line("correctness: sync debug mode needs CUDA; the CPU suite checks that no operator reads back "
                    "(tests/test_static_step.py)")
    runs = {}
    for label, graphed in (("eager", False), ("eager again", False), ("graphed", True)):
        step = bench.step("standard", batch, graphed=graphed)
        bench.run(step, args.compare_steps, 0)
        runs[label] = torch.cat([p.detach().float().flatten() for p in step.module.parameters()])
        del step
    scale = runs["eager"].abs().max()
    for other in ("eager again", "graphed"):
        difference = float((runs[other] - runs["eager"]).abs().max() / scale)
        report.line(f"correctness: after {args.compare_steps} steps at batch {batch}, max |w - w_eager| / max |w|: "
                    f"{other} {difference:.2e}")
        report.record("correctness", **{f"{other.replace(' ', '_')}_difference": difference})


def concurrent(report, bench, args, graphed_times):
    """Four graphed batch-128 runs, each on its own CUDA stream, stepped in turn: images/s together."""
    if not bench.cuda:
        report.line("concurrent: CUDA streams only; on this device the runs would take turns")
        return
    count, batch = 4, 128
    runs = [bench.step("standard", batch, graphed=True) for _ in range(count)]
    streams = [torch.cuda.Stream() for _ in range(count)]
    for first, steps in ((0, 5), (5, args.steps)):
        torch.cuda.synchronize()
        began = time.perf_counter()
        for k in range(first, first + steps):
            for run, stream in zip(runs, streams):
                with torch.cuda.stream(stream):
                    run.evaluate(0, k)
                    run.update(k)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / args.steps
    single = bench.step("standard", batch, graphed=True)
    bench.warm(single, True)
    alone = bench.run(single, args.steps, 10)
    together = count * batch / seconds
    report.line(f"concurrent: {count} graphed batch-{batch} runs on their own streams: {together:,.0f} images/s "
                f"together; one alone {batch / alone:,.0f} images/s"
                + (f"; one batch-{args.batch} run {args.batch / graphed_times['standard']:,.0f}"
                   if "standard" in graphed_times else ""))
    report.record("concurrent", together_images_per_s=together, alone_images_per_s=batch / alone)


if __name__ == "__main__":
    main()
