"""A whole `turnpike resnet54` run against its step benchmark: what a run spends outside the training steps.

    .venv/bin/python benchmarks/whole_run.py                          # 2-core CPU: MNIST 5k, width 16, 3 x 3 blocks
    PYTHONPATH=. python benchmarks/whole_run.py --device cuda --amp --blocks 18 --width 32 --cuda-graph

Three rates of the same network, batch and data in one process, images per second of training:

- steps: ``evaluate`` + ``update`` of the run's own backend (the run's OCP and solve settings), timed over an
  epoch's steps after a warm-up epoch: the step benchmark;
- training: the run's ``solve_ocp`` loop (``train_time_s`` in metrics.json: steps, the divergence guard, the
  per-epoch log line and checkpoint);
- whole: epochs x images / the whole ``run_resnet54`` call (data, model, training, the per-exit evaluation of
  train and test sets, the pruned network's check, the early-exit curve, the run folder and figures).

For each of ``--epochs`` (default 1 and 3) the script prints the three rates, their ratios to the steps' (the
step rate is measured before and after the runs, and their mean used) and the seconds a run spends outside
its training loop, and from the longest run whole / steps at the paper's 165 epochs.
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from turnpike.backends import make_backend
from turnpike.experiments import ResNet54Config, run_resnet54
from turnpike.experiments._recipe import problem, sgd_options, solve_settings

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", default="cpu")
parser.add_argument("--dataset", default="mnist")
parser.add_argument("--data", default=None, help="folder of the data set's files (default: the embedded MNIST 5k)")
parser.add_argument("--width", type=int, default=16, help="homogeneous width")
parser.add_argument("--blocks", type=int, default=3, help="blocks per stage")
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--epochs", default="1,3", help="two epoch counts, comma-separated")
parser.add_argument("--train-subset", type=int, default=None)
parser.add_argument("--amp", action="store_true")
parser.add_argument("--cuda-graph", action="store_true")
args = parser.parse_args()


def config(epochs: int) -> ResNet54Config:
    return ResNet54Config(dataset=args.dataset, data_dir=args.data, arch="homogeneous", width=args.width,
                          blocks_per_stage=args.blocks, epochs=epochs, batch_size=args.batch, device=args.device,
                          amp=args.amp, cuda_graph=args.cuda_graph, train_subset=args.train_subset, milestones=())


def synchronise():
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def step_rate() -> float:
    """Images/s of the run's own steps over one epoch, after one epoch of warm-up."""
    recipe = config(2)
    data = recipe.load_data()
    ocp = problem(recipe, recipe.build_network(data), data)
    settings = solve_settings(recipe, data)
    per_epoch = settings.pop("checkpoint_every")
    batch, seed, device = settings.pop("batch_size"), settings.pop("seed"), settings.pop("device")
    test = settings.pop("test_data")
    backend = make_backend(ocp, seed=seed, batch_size=batch, device=torch.device(device), test_data=test,
                           settings=settings)
    options = sgd_options(recipe, per_epoch)
    backend.begin_phase(0, backend.methods["sgd"], 2 * per_epoch, options)
    values = []
    for step in range(2 * per_epoch):
        if step == per_epoch:
            synchronise()
            began = time.perf_counter()
        values.append(backend.evaluate(0, step))
        backend.update(step)
    synchronise()
    assert all(map(torch.isfinite, map(torch.as_tensor, values)))
    return data.split_size("train") / (time.perf_counter() - began)


def main():
    counts = [int(e) for e in args.epochs.split(",")]
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dataset}, "
          f"homogeneous width {args.width}, {args.blocks} blocks per stage, batch {args.batch}, amp {args.amp}, "
          f"cuda_graph {args.cuda_graph}", flush=True)
    with tempfile.TemporaryDirectory() as folder:      # imports and first-use costs (plots) outside the timings
        run_resnet54(ResNet54Config(**{**vars(config(1)), "train_subset": 256, "test_subset": 128}),
                     Path(folder) / "run", progress=False)
    rates = [step_rate()]
    count = config(1).load_data().split_size("train")
    print(f"steps: {rates[0]:,.0f} images/s ({count:,} training images)", flush=True)
    whole = {}
    for epochs in counts:
        with tempfile.TemporaryDirectory() as folder:
            began = time.perf_counter()
            metrics = run_resnet54(config(epochs), Path(folder) / "run", progress=False)
            seconds = time.perf_counter() - began
        whole[epochs] = (seconds, metrics["train_time_s"])
    rates.append(step_rate())
    steps = sum(rates) / 2
    print(f"steps again: {rates[1]:,.0f} images/s; ratios below against the mean {steps:,.0f}", flush=True)
    for epochs, (seconds, training) in whole.items():
        images = epochs * count
        print(f"{epochs} epochs: whole {seconds:.1f} s ({images / seconds:,.0f} images/s, whole/steps "
              f"{images / seconds / steps:.3f}); training {training:.1f} s (training/steps "
              f"{images / training / steps:.3f}); outside the training {seconds - training:.1f} s", flush=True)
    epochs = max(whole)
    seconds, training = whole[epochs]
    per_epoch, outside = training / epochs, seconds - training
    print(f"at the paper's 165 epochs with this run's costs ({outside:.1f} s outside the training, {per_epoch:.2f} s "
          f"an epoch): whole/steps {165 * count / (outside + 165 * per_epoch) / steps:.3f}")

if __name__ == "__main__":
    main()
