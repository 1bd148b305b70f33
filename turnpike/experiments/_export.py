r"""The pruned network of a finished run, exported for inference without turnpike: ``turnpike prune``.

The network of a ``turnpike resnet54`` or ``turnpike train`` run folder, cut at exit M (its turnpike layer
unless told otherwise), becomes ``subresnet(M)`` (the stem, blocks 0..M-1, the remaining skip paths with
exit M's statistics, the head), whose forward pass ``torch.export`` captures with a free batch size:
``torch.export.load(FILE).module()(images)`` runs it with torch alone, neither turnpike nor the model's own
code imported. A JSON file beside it says how images are prepared (channels, size, the per-channel mean and
std of the training images: ``(pixels / 255 − mean) / std``), the class names of an image folder, the
depth, and what the exported module measured on the run's test set, which equals the run's exit-M test
accuracy (checked).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import _checks
from .._runs import check_writable_file, read_json, write_json
from ..data import ImageFolderStreams, ImageFolderTensors
from ._recipe import EvaluationBatches
from ._run_reading import _run_file, check_finished, load_run_data, load_run_network, run_config

__all__ = ["export_pruned"]


def _depth(metrics: dict, depth, folder: Path) -> int:
    """The exit to cut at: ``depth``, or the run's turnpike layer (refused where it cuts no block)."""
    if depth is None:
        depth = metrics.get("turnpike_layer")
        if depth is None or depth >= int(metrics["depth"]):
            raise ValueError(f"depth: expected the exit to cut at; the run in {folder} has no turnpike layer before "
                             f"its last block (every block still lowers the loss), so no block can be cut and nothing "
                             f"was written (give a depth M in 0..{metrics['depth']} to cut anyway)")
    return _checks.integer("depth", depth, minimum=0, maximum=int(metrics["depth"]))


@torch.no_grad()
def export_pruned(folder, *, depth: int | None = None, out=None, device="cpu", allow_unfinished: bool = False,
                  data_dir=None) -> dict:
    """Export the run in ``folder`` pruned at ``depth`` (default: its turnpike layer) to ``out`` (default:
    ``folder/pruned-M.pt2``) and its preparation to the same name with ``.json``; return that JSON's content.

    Before anything is written the pruned network classifies the run's test set (read as the run read it,
    on ``device``): its accuracy must be the run's exit-M accuracy to the image; and the exported program,
    on the CPU where it is captured (so that the file loads on any machine), must give the network's logits
    on the first test batch (ValueErrors otherwise). An unfinished run (stopped at a time limit or by a signal)
    is refused unless ``allow_unfinished``; its export then says so (``"unfinished"`` in the JSON). ``data_dir``:
    where the run's data is now, if it moved (checked to be the same data).
    """
    folder = Path(folder)
    metrics = read_json(_run_file(folder, "metrics.json"), "the metrics of a finished training run")
    config = run_config(folder, data_dir=data_dir)     # a run of another command is refused here
    label = check_finished(folder, metrics, allow_unfinished=allow_unfinished)
    depth = _depth(metrics, depth, folder)
    out = check_writable_file("out", Path(out) if out is not None else folder / f"pruned-{depth}.pt2")
    # the pruned network's forward pass is its output, exit M: export captures that path alone
    pruned = load_run_network(folder, device=device).subresnet(depth).eval()
    data = load_run_data(folder, config)
    correct, total, first = 0, 0, None
    for images, labels in EvaluationBatches(data, device, channels_last=config.channels_last):
        correct += int((pruned(images).argmax(-1).cpu() == labels).sum())
        total += len(labels)
        first = images.cpu().contiguous() if first is None else first
    accuracy = correct / total
    expected = metrics["exit_test_accuracy"][depth]
    if abs(accuracy - expected) > 1.5 / total:      # one image either way: round-off at a tie
        raise ValueError(f"out: expected the pruned network to classify the test set as exit {depth} does "
                         f"({expected:.4f}), got {accuracy:.4f}: not exported")
    plain = pruned.cpu().to(memory_format=torch.contiguous_format)
    example = first[:1].repeat(2, 1, 1, 1)            # two images: a batch of one would fix the batch size
    try:
        program = torch.export.export(plain, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as error:                     # noqa: BLE001 (torch.export's many kinds of refusal)
        raise ValueError(f"out: expected a network torch.export can capture, got one it refused "
                         f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}): "
                         "not exported") from None
    reference = plain(first)
    difference = float((program.module()(first) - reference).abs().max()) / max(float(reference.abs().max()), 1e-12)
    if difference > 1e-4:
        raise ValueError(f"out: expected the exported program to compute the pruned network's logits, got a "
                         f"relative difference of {difference:.1e} on the first test batch: not exported")
    torch.export.save(program, out)
    classes = data.classes if isinstance(data, (ImageFolderTensors, ImageFolderStreams)) else None
    summary = {"file": str(Path(out).resolve()), "run": str(folder.resolve()), "depth": depth, "network_depth": int(metrics["depth"]),
               "parameters": sum(p.numel() for p in plain.parameters()),
               "multiply_adds": plain.exit_costs(*data.image_size)["network"],
               "test_accuracy": accuracy, "run_exit_test_accuracy": expected,
               "relative_difference_from_network": difference,
               "input": {"channels": data.channels, "height": data.image_size[0], "width": data.image_size[1],
                         "mean": list(data.mean), "std": list(data.std),
                         "preparation": "(pixels / 255 - mean) / std per channel, shape (batch, channels, "
                                        "height, width), float32"},
               "classes": list(classes) if classes else None,
               "load": "torch.export.load(file).module()(images)", "unfinished": label}
    write_json(out.with_suffix(".json"), summary)
    return summary

