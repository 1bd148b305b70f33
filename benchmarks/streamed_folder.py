"""What ``turnpike train --stream`` costs: an image folder read from its files batch by batch, against the same
folder decoded into memory first (issue 22).

    .venv/bin/python benchmarks/streamed_folder.py [--images 4000 --base 8 --batch 128 --epochs 1 --workers 0,1,2]

The folder: ``--images`` training and ``--images // 4`` test images of Fashion-MNIST (Debian's copy, where it is
installed; else the embedded MNIST subset, at most 5,000 images in all), written once as 28x28 grey PNG files,
one sub-folder per class under ``train/`` and ``val/``, into a temporary folder. The run: what ``turnpike train
--data DIR --image-size 32 --image-channels 1 --model-option base=B --model-option small_stem=true --variant ws``
does, through the same pieces (:class:`TrainConfig`, ``problem``, the solve settings of ``_recipe``), for
``--epochs`` epochs at batch ``--batch``:

- ``memory`` (the baseline, ``turnpike train --data DIR``): every image decoded into a uint8 tensor first
  (``image_folder``), batches gathered from it;
- ``stream-wK`` (``--stream``): ``image_folder_streams``, each image decoded when its batch is read, by a
  DataLoader with K worker processes (``loader_workers=K``; K = 0 decodes in the training process, which is what
  "auto" picks on a CPU).

Each contender's time has three parts, all inside one process and alternated round by round: ``prepare`` (the
decoding into memory, or the streamed statistics pass over the training files), ``train`` (the solve's steps:
from its first step callback to its last, plus the first step estimated as the median) and ``evaluate`` (the
solve's end: the exits' metrics over the training and test sets, read again by a streamed run). The script
prints each part (median over rounds), the total and its ratio to ``memory``'s, and whether the streamed runs
ended with exactly the memory run's weights (they should: same batches, augmentation and statistics).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_folder(root: Path, images: int) -> str:
    """``images`` training and ``images // 4`` test PNGs, one sub-folder per class; returns the data set's name."""
    from PIL import Image

    from turnpike.data import load_raw_images
    from turnpike.data._images import FASHION_MNIST_DIR

    name = "fashion-mnist" if FASHION_MNIST_DIR.is_dir() else "mnist"
    (train_x, train_y), (test_x, test_y), _ = load_raw_images(name)
    counts = (images, images // 4)
    if counts[0] > len(train_y) or counts[1] > len(test_y):
        raise SystemExit(f"--images: expected at most {len(train_y)} ({name}: {len(test_y)} test images), got {images}")
    rng = np.random.default_rng(0)
    for folder, pixels, labels, count in (("train", train_x, train_y, counts[0]), ("val", test_x, test_y, counts[1])):
        for index in _every_class_first(np.asarray(labels), rng)[:count]:
            target = root / folder / f"class-{int(labels[index])}"
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(pixels[index], dtype=np.uint8).reshape(28, 28)).save(target / f"{index:05d}.png")
    return name


def _every_class_first(labels: np.ndarray, rng) -> list:
    """A random order of the samples in which the classes take turns (a split's files may be stored sorted by
    class; any prefix of 10 or more then holds every class)."""
    order, taken, rank = rng.permutation(len(labels)), {}, {}
    for index in order:
        rank[index] = taken.get(labels[index], 0)
        taken[labels[index]] = rank[index] + 1
    return sorted(order, key=rank.__getitem__)                  # stable: the permutation's order within a turn


def one_run(config, workers):
    """(prepare s, train s, evaluate s, final weights) of one run of ``config``; ``workers`` None: in memory."""
    from turnpike import solve_ocp
    from turnpike.data import image_folder, image_folder_streams
    from turnpike.experiments._recipe import problem, sgd_options, solve_settings

    start = time.perf_counter()
    if workers is None:
        data = image_folder(config.data_dir, size=config.image_size, channels=config.image_channels)
    else:
        data = image_folder_streams(config.data_dir, size=config.image_size, channels=config.image_channels,
                                    workers=workers)
    prepared = time.perf_counter()
    ocp = problem(config, config.build_network(data), data)
    settings = solve_settings(config, data)
    per_epoch = settings["checkpoint_every"]
    marks = []
    begun = time.perf_counter()
    solution = solve_ocp(ocp, method="sgd", steps=config.epochs * per_epoch, options=sgd_options(config, per_epoch),
                         progress=False, callback=lambda step, value, module: marks.append(time.perf_counter()),
                         **settings, **({} if workers is None else {"loader_workers": workers}))
    ended = time.perf_counter()
    gaps = np.diff(marks)
    first = float(np.median(gaps)) if len(gaps) else marks[0] - begun     # the first step's set-up left out
    train = marks[-1] - marks[0] + first
    return prepared - start, train, ended - marks[-1], [p.detach().clone() for p in solution.network.parameters()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="training images (a quarter as many test images)")
    parser.add_argument("--base", type=int, default=8, help="ResNet-18's stem width")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", default="0,1,2", help="DataLoader workers of the streamed contenders")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    from turnpike.experiments import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    contenders = {"memory": None, **{f"stream-w{int(k)}": int(k) for k in args.workers.split(",") if k != ""}}
    times = {name: {"prepare": [], "train": [], "evaluate": []} for name in contenders}
    try:
        with tempfile.TemporaryDirectory() as folder:
            name = write_folder(Path(folder), args.images)
            config = TrainConfig(data_dir=folder, image_size=32, image_channels=1, model="resnet18",
                                 model_options={"base": args.base, "small_stem": True}, variant="ws",
                                 epochs=args.epochs, milestones=(), batch_size=args.batch, flip=False)
            print(f"{name}: {args.images} training and {args.images // 4} test PNG files (28x28, read at 32x32), "
                  f"resnet18 base {args.base} ws, batch {args.batch}, {args.epochs} epoch(s), threads {args.threads}, "
                  f"{args.rounds} rounds")
            weights = {}
            for _ in range(args.rounds):
                for contender, workers in contenders.items():
                    prepare, train, evaluate, weights[contender] = one_run(config, workers)
                    for part, value in zip(("prepare", "train", "evaluate"), (prepare, train, evaluate)):
                        times[contender][part].append(value)
    finally:
        torch.set_num_threads(threads)
    medians = {name: {part: statistics.median(values) for part, values in parts.items()}
               for name, parts in times.items()}
    total = {name: sum(parts.values()) for name, parts in medians.items()}
    print("| contender | prepare s | train s | evaluate s | total s | total / memory | same weights as memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    same = {}
    for name, parts in medians.items():
        same[name] = all(torch.equal(a, b) for a, b in zip(weights[name], weights["memory"]))
        print(f"| {name} | {parts['prepare']:.2f} | {parts['train']:.2f} | {parts['evaluate']:.2f} | "
              f"{total[name]:.2f} | {total[name] / total['memory']:.3f} | {'yes' if same[name] else 'NO'} |")
    return {"times": times, "ratios": {name: total[name] / total["memory"] for name in total}, "same": same}


if __name__ == "__main__":
    main()
