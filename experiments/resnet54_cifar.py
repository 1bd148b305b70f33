"""ResNet-54 with intermediate-output stage costs, 2025 stage-cost paper (Sec. 3, App. A.1, Table 1).

    .venv/bin/python experiments/resnet54_cifar.py --data DIR [--variant ws] [--out runs/resnet54]
    .venv/bin/python experiments/resnet54_cifar.py --dataset fashion-mnist --arch homogeneous --epochs 5
    torchrun --nproc_per_node K experiments/resnet54_cifar.py --device cuda --amp [--sync-batchnorm] ...

Trains through ``turnpike.OCP`` + ``turnpike.solve_ocp`` like every other system; the options are those
of ``turnpike resnet54`` (this script is that command), the defaults the paper's recipe: SGD lr 0.1,
momentum 0.9, batch 128, 165 epochs, lr ÷ 10 after epochs 82 and 123, γ = 0.02, λ = 1e-4.
CIFAR cannot be downloaded on these machines: pass the folder of its python-pickle batches.
Under torchrun the K processes train with DistributedDataParallel (NCCL on GPUs, gloo on CPUs), each on
its share of every batch, and only rank 0 writes the run folder (docs/resnet54.md).
"""
import sys

from turnpike.cli import main

sys.exit(main(["resnet54", *sys.argv[1:]]))
