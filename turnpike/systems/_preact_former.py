"""The state layout of the former ``PreActResNet`` class, read by :func:`~turnpike.preact_resnet`'s networks: its
weights files, run folders and checkpoints (optimiser states included) keep loading and resuming."""
from __future__ import annotations

from collections import OrderedDict

from ._protocol import SavedLayout


class FormerPreActResNet(SavedLayout):
    """The former class kept the head's statistics of all N+1 exits in ``exit_running_*`` (row N: the network's),
    its head as ``head_bn_*`` and ``head_linear``, its trailing skips as ``tail_skips`` and the full exits' copies
    as (rows, ...) tensors; a :func:`~turnpike.preact_resnet` network keeps exit N's statistics in its head
    BatchNorm, exits 0..N-1 in a row table, each copy as a (rows, numel) parameter, and its head as
    ``head.{tail skips, BatchNorm, ReLU, pool, Linear}``."""

    def wrote(self, state: dict, prefix: str = "") -> bool:
        return prefix + "head_linear.weight" in state

    def state_dict(self, state: dict, network, prefix: str = "") -> dict:
        tails = len(network.head) - 4
        norm, linear = f"{prefix}head.{tails}.", f"{prefix}head.{tails + 3}."
        table = f"{prefix}exit_statistics.{len(network.exit_statistics) - 1}."
        renamed = {f"{prefix}head_bn_weight": norm + "weight", f"{prefix}head_bn_bias": norm + "bias",
                   f"{prefix}head_linear.weight": linear + "weight", f"{prefix}head_linear.bias": linear + "bias"}
        renamed.update({f"{prefix}tail_skips.{t}.weight": f"{prefix}head.{t}.weight" for t in range(tails)})
        copies = [f"{prefix}exit_skip_weights.{i}" for i in range(len(network.exit_copies) - 4)]
        copies += [f"{prefix}exit_{name}" for name in ("bn_weight", "bn_bias", "linear_weight", "linear_bias")]
        out = OrderedDict()
        for key, value in state.items():
            if key in renamed:
                out[renamed[key]] = value
            elif key.startswith(f"{prefix}exit_running_") or key == f"{prefix}exit_num_batches_tracked":
                name = key[len(prefix) + len("exit_"):]
                out[table + name] = value[:-1]
                out[norm + name] = value[-1]
            elif key in copies and network.exits == "full":
                out[f"{prefix}exit_copies.{copies.index(key)}"] = value.reshape(value.shape[0], -1)
            else:
                out[key] = value
        return out

    def optimiser_order(self, network) -> list:
        # the former class's own parameters (head BatchNorm affine) came before its children's (stem, blocks,
        # trailing skips, linear), and its exits' in exit_parameters() order, which is exit_copies' order
        tails = len(network.head) - 4
        norm = (f"head.{tails}.weight", f"head.{tails}.bias")
        names = [name for name, _ in network.named_parameters()]
        backbone = [name for name in names if not name.startswith("exit_copies.") and name not in norm]
        return list(norm) + backbone + [name for name in names if name.startswith("exit_copies.")]
