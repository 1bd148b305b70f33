"""Several processes, one solve: process groups under ``torchrun`` and BatchNorm synchronised across them.

:func:`init_distributed` joins the group ``torchrun`` sets up (NCCL with one GPU per ``LOCAL_RANK``,
gloo on CPUs) and :func:`finish_distributed` leaves it; :func:`is_main_process` is True on rank 0
(the one that writes files); :class:`SyncedBatchNorm2d` normalises by the whole batch's statistics
over all ranks. ``solve_ocp`` on a module system then trains with DistributedDataParallel.
"""
from ._distributed import (PROCESS_GROUP_TIMEOUT_S, SyncedBatchNorm2d, finish_distributed, init_distributed,
                           is_main_process)

__all__ = ["PROCESS_GROUP_TIMEOUT_S", "SyncedBatchNorm2d", "finish_distributed", "init_distributed",
           "is_main_process"]
