r"""The 2025 paper's comparison as one resumable study: Table 1, Tables 2–3, Figs. 2–5 and early exit.

One base training config (a :class:`ResNet54Config` for the paper's pre-activation ResNet, a
:class:`TrainConfig` for any residual network; data, architecture, recipe, seed) gives the runs of the
paper's comparison, each in its own folder under the study folder::

    standard/        ResNet-N, standard training (γ = 0; its exits evaluated post hoc)
    ws/  full/       ResNet-N with the stage cost, exits sharing the backbone head / with their own
    subresnet-M/     the SubResNet-M architecture trained from scratch without stage cost (Definition 1)

and from their metrics:

- **Table 1**: test accuracy and parameters of ResNet-N (standard), SubResNet-M (standard), ResNet-N
  with stage cost (ws, full) and those networks pruned at M. Pruning at M keeps the SubResNet-M whose
  output *is* exit M (Lemma 1/2), so its accuracy is the run's exit-M test accuracy, with no second
  evaluation. The paper's numbers stand beside when the data set and architecture match one of its
  columns (a ResNet54Config of ResNet-54 and M = 12); Fashion-MNIST, not in the paper, is shown beside its
  MNIST column.
- **Tables 2–3** (Theorems 1–2) of each stage-cost run against the SubResNet-M runs
  (:func:`turnpike.experiments.depth_bounds_from_runs`).
- **Figures**: per-exit test loss and accuracy of the ResNet-N runs with the SubResNet-M runs as
  points (Figs. 2–3), output residuals and branch norms (Figs. 4–5), and each stage-cost run's
  early-exit curve with the other runs as points.

A time limit covers the whole study: the run it stops in is left at its checkpoint and ``resume=True``
continues there, keeping the runs already finished (their settings are checked against the base).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .. import _checks
from .._distributed import is_main_process
from .._runs import claim_run_folder, read_json, write_json, write_text
from ._depth_bounds import depth_bounds_from_runs
from ._resnet54 import ResNet54Config
from ._recipe import RESUMABLE, RESUMABLE_STOPS, RUN_FILES, TrainingRecipe
from ._run_reading import load_run_network
from ._training import run_training

#: Table 1 of the 2025 paper: test accuracy (%) and parameters (millions) of ResNet-54 and SubResNet-12,
#: per (architecture, data set) column
PAPER_TABLE1 = {
    ("homogeneous", "mnist"): {"standard": (99.64, 1.0), "subresnet": (99.63, 0.2), "ws": (99.62, 1.0),
                               "ws_pruned": (99.54, 0.2), "full": (99.68, 1.0), "full_pruned": (99.64, 0.2)},
    ("homogeneous", "cifar10"): {"standard": (93.05, 4.0), "subresnet": (91.43, 0.9), "ws": (91.59, 4.0),
                                 "ws_pruned": (91.02, 0.9), "full": (91.64, 4.0), "full_pruned": (91.26, 0.9)},
    ("homogeneous", "cifar100"): {"standard": (71.94, 4.0), "subresnet": (68.77, 0.9), "ws": (69.97, 4.0),
                                  "ws_pruned": (66.55, 0.9), "full": (69.18, 4.4), "full_pruned": (66.66, 0.9)},
    ("standard", "cifar10"): {"standard": (93.28, 1.7), "subresnet": (85.93, 0.06), "ws": (92.51, 1.7),
                              "ws_pruned": (78.74, 0.06), "full": (92.91, 1.9), "full_pruned": (78.64, 0.06)},
}
PAPER_DEPTH, PAPER_SUB_DEPTH = 54, 12
#: the paper column a data set is shown beside when the paper has none of its own
_PAPER_STAND_IN = {"fashion-mnist": "mnist"}

VARIANTS = ("standard", "ws", "full")


def study_runs(base: TrainingRecipe, variants=VARIANTS, subresnets=(PAPER_SUB_DEPTH,), *, depth=None) -> dict:
    """``{folder name: config}`` of the study's runs, in the order they train (``depth``: the network's N,
    if known; a ``train`` config builds its model to find it)."""
    _checks.instance("base", base, TrainingRecipe, "a training config (ResNet54Config, TrainConfig)")
    variants = tuple(variants)
    for variant in variants:
        _checks.choice("variants", variant, VARIANTS)
    if not variants and not subresnets:
        _checks.fail("variants", "at least one run (a variant or a SubResNet depth)", variants)
    depth = base.network_depth() if depth is None else depth
    for m in subresnets:
        if _checks.integer("subresnets", m, minimum=1) >= depth:
            _checks.fail("subresnets", f"SubResNet depths below the network's N = {depth}", m)
    runs = {variant: replace(base, variant=variant, subresnet=None) for variant in dict.fromkeys(variants)}
    for m in dict.fromkeys(subresnets):
        runs[f"subresnet-{m}"] = replace(base, variant="standard", subresnet=m)
    return runs


def _finished(folder: Path, config: TrainingRecipe) -> dict | None:
    """The metrics of a finished run of ``config`` in ``folder``; None if it has none or was stopped."""
    paths = folder / "config.json", folder / "metrics.json"
    if not all(p.is_file() for p in paths):
        return None
    claim_run_folder(folder, config, command=config.command, resume=True, overwrite=False, resumable=RESUMABLE,
                     run_files=RUN_FILES)
    metrics = read_json(paths[1], "the run's metrics")
    return None if metrics["status"] in RESUMABLE_STOPS else metrics


def run_study(base: TrainingRecipe, out, *, variants=VARIANTS, subresnets=(PAPER_SUB_DEPTH,),
              resume: bool = False, overwrite: bool = False, plots: bool = True, progress: bool = True,
              on_run=None) -> dict:
    """Train (or, with ``resume``, keep or continue) every run of :func:`study_runs` under ``out``, then
    write ``study.json`` and ``study.md`` (Table 1, Tables 2–3) and the comparison figures.

    ``base.time_limit_s`` bounds the whole study; ``on_run(name, metrics, folder)`` is called after each
    run (the CLI prints its report). Returns the study: ``{"status", "runs", "table1", "depth_bounds",
    "figures"}``; status "time_limit" when a run was stopped (``resume=True`` continues it).
    """
    out = Path(out)
    depth = base.network_depth()
    runs = study_runs(base, variants, subresnets, depth=depth)
    deadline = None if base.time_limit_s is None else time.perf_counter() + base.time_limit_s
    done = {}
    for name, config in runs.items():
        folder = out / name
        metrics = _finished(folder, config) if resume else None
        if metrics is None:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            metrics = run_training(replace(config, time_limit_s=left), folder, plots=plots, resume=resume,
                                   overwrite=overwrite, progress=progress)
        if on_run is not None:
            on_run(name, metrics, folder)
        if metrics["status"] in RESUMABLE_STOPS:
            why = "at the time limit" if metrics["status"] == "time_limit" else f"by {metrics['signal']}"
            study = {"status": metrics["status"], "signal": metrics.get("signal"), "runs": list(done),
                     "stopped_in": name,
                     "message": f"stopped {why} in run {name}; resume=True (--resume) continues there"}
            if is_main_process():
                write_json(out / "study.json", study)
            return study
        done[name] = metrics
    if not is_main_process():       # under torchrun rank 0 writes (and reads back) the run folders
        return {"status": "finished", "runs": list(done)}
    return _summarise(base, out, done, sorted(dict.fromkeys(subresnets)), depth, plots=plots)


#: the 2025 paper's name of its study
run_resnet54_study = run_study


def _summarise(base: TrainingRecipe, out: Path, runs: dict, subresnets: list, depth: int, *, plots: bool) -> dict:
    table1 = table1_rows(base, out, runs, subresnets, depth)
    bounds = {}
    sub_folders = [out / f"subresnet-{m}" for m in subresnets]
    for variant in ("ws", "full"):
        if variant in runs and sub_folders:
            bounds[variant] = depth_bounds_from_runs(out / variant, sub_folders)
    figures = []
    if plots:
        from ._conv_plots import study_figures
        figures = [str(p) for p in study_figures(runs, out)]
    study = {"status": "finished", "runs": list(runs), "depth": depth, "table1": table1, "depth_bounds": bounds,
             "figures": figures}
    write_json(out / "study.json", study)
    write_text(out / "study.md", study_markdown(base, study))
    return study


def _paper_column(base: TrainingRecipe, depth: int, sub_depth: int | None):
    """(column name, {row key: (accuracy %, parameters M)}) of Table 1 to show beside, or None."""
    if not isinstance(base, ResNet54Config):          # the paper trained its pre-activation ResNet alone
        return None
    dataset = _PAPER_STAND_IN.get(base.dataset, base.dataset)
    column = PAPER_TABLE1.get((base.arch, dataset))
    if column is None or depth != PAPER_DEPTH or sub_depth not in (None, PAPER_SUB_DEPTH):
        return None
    if base.arch == "homogeneous" and base.width not in (None, 32 if dataset == "mnist" else 64):
        return None                        # the paper's homogeneous widths: 32 (MNIST), 64 (CIFAR)
    name = f"paper, {dataset}" + (" (a different data set)" if dataset != base.dataset else "")
    return name, column


def table1_rows(base: TrainingRecipe, out: Path, runs: dict, subresnets: list, depth: int) -> list[dict]:
    """Table 1's rows from the runs: ``{"model", "key", "test_accuracy", "parameters", "paper"}``
    (accuracy as a fraction, ``paper`` (accuracy %, parameters M) or None)."""
    network_name = base.network_label(depth)
    rows = []

    def add(model, key, accuracy, parameters, sub_depth=None, variant=None):
        paper = _paper_column(base, depth, sub_depth)
        rows.append({"model": model, "key": key, "variant": variant, "sub_depth": sub_depth,
                     "test_accuracy": accuracy, "parameters": parameters,
                     "paper": paper[1].get(key) if paper else None, "paper_column": paper[0] if paper else None})

    if "standard" in runs:
        add(f"{network_name} standard training", "standard", runs["standard"]["test_accuracy"],
            runs["standard"]["parameters"])
    for m in subresnets:
        name = f"subresnet-{m}"
        if name in runs:
            add(f"SubResNet-{m} standard training", "subresnet", runs[name]["test_accuracy"],
                runs[name]["parameters"], m)
    for variant, label in (("ws", "{name}_ws stage cost"), ("full", "{name} stage cost")):    # the paper's names
        if variant not in runs:
            continue
        metrics = runs[variant]
        add(label.format(name=network_name), variant, metrics["test_accuracy"], metrics["parameters"], variant=variant)
        network = load_run_network(out / variant)
        for m in subresnets:      # pruned at M: the SubResNet-M whose output is exit M
            add(f"  SubResNet-{m} pruned ({variant})", f"{variant}_pruned", metrics["exit_test_accuracy"][m],
                network.subresnet(m).parameter_count(), m, variant)
        pruned = metrics.get("pruned")
        if pruned and pruned["depth"] not in (*subresnets, depth):     # at N: the network itself
            add(f"  SubResNet-{pruned['depth']} pruned at the turnpike ({variant})", "turnpike",
                pruned["test_accuracy"], pruned["parameters"], pruned["depth"], variant)
        if pruned and "finetuned" in pruned:
            add(f"  SubResNet-{pruned['depth']} pruned, fine-tuned {pruned['finetuned']['epochs']} epochs ({variant})",
                "finetuned", pruned["finetuned"]["test_accuracy"], pruned["parameters"], pruned["depth"], variant)
    return rows


def study_markdown(base: TrainingRecipe, study: dict) -> str:
    """Table 1 (with the paper's column where one matches) and Tables 2–3 as Markdown."""
    rows = study["table1"]
    paper_column = next((r["paper_column"] for r in rows if r["paper_column"]), None)
    name = base.network_label(study["depth"])
    lines = [f"# {name} study: {base.dataset}, {base.architecture_label()}, {base.epochs} epochs, "
             f"seed {base.seed}", "", "## Table 1: test accuracy % (parameters, millions)", ""]
    header = "| model | this study |" + (f" {paper_column} |" if paper_column else "")
    lines += [header, "| --- | --- |" + (" --- |" if paper_column else "")]
    for r in rows:
        ours = f"{100 * r['test_accuracy']:.2f} ({r['parameters'] / 1e6:.3g} M)"
        paper = "" if not paper_column else (
            f" {r['paper'][0]:.2f} ({r['paper'][1]:g} M) |" if r["paper"] else " – |")
        lines.append(f"| {r['model'].strip()} | {ours} |{paper}")
    for variant, bounds in study["depth_bounds"].items():
        lines += ["", f"## Tables 2–3 (Theorems 1–2): {name} {variant}, "
                      f"γ = {bounds['gamma']:g}, λ = {bounds['weight_decay']:g}", "", bounds["table"]]
    return "\n".join(lines) + "\n"


def seeds_summary(studies: dict) -> dict:
    """Table 1 over seeds, from ``{seed: study}`` of finished studies with one base config.

    Returns ``{"rows": [...], "pruned_vs_scratch": [...], "markdown": str}``: per Table 1 model the mean,
    minimum and maximum test accuracy over the seeds (the turnpike rows, whose depth the rule picks per
    seed, pooled per variant with their depths listed), and per stage-cost variant and M the difference
    between the network pruned at M and SubResNet-M trained from scratch, seed by seed.
    """
    groups = {}                # (key, variant, M or None) -> {"model", "accuracy": [...], "depths": [...]}
    for seed in sorted(studies):
        for row in studies[seed]["table1"]:
            pooled = row["key"] in ("turnpike", "finetuned")      # the depth differs from seed to seed
            group = groups.setdefault((row["key"], row["variant"], None if pooled else row["sub_depth"]),
                                      {"model": _pooled_name(row) if pooled else row["model"].strip(),
                                       "accuracy": [], "depths": []})
            group["accuracy"].append(row["test_accuracy"])
            group["depths"].append(row["sub_depth"])
    rows = [{"model": g["model"], "mean": float(sum(g["accuracy"]) / len(g["accuracy"])), "min": min(g["accuracy"]),
             "max": max(g["accuracy"]), "seeds": len(g["accuracy"]),
             "depths": g["depths"] if key[0] in ("turnpike", "finetuned") else None}
            for key, g in groups.items()]
    comparisons = []
    for (key, variant, m), group in groups.items():
        scratch = groups.get(("subresnet", None, m))
        if not key.endswith("_pruned") or scratch is None or len(scratch["accuracy"]) != len(group["accuracy"]):
            continue
        gaps = [100 * (p - q) for p, q in zip(group["accuracy"], scratch["accuracy"])]
        within = sum(abs(g) <= 1.0 + 1e-9 for g in gaps)          # 1e-9: the round-off of 100·(p − q)
        comparisons.append({"variant": variant, "sub_depth": m, "points": gaps, "mean": sum(gaps) / len(gaps),
                            "within_one_point": within})
    return {"seeds": sorted(studies), "rows": rows, "pruned_vs_scratch": comparisons,
            "markdown": _seeds_markdown(sorted(studies), rows, comparisons)}


def _pooled_name(row: dict) -> str:
    what = "pruned at the turnpike" if row["key"] == "turnpike" else "pruned at the turnpike, fine-tuned"
    return f"SubResNet {what} ({row['variant']})"


def _seeds_markdown(seeds: list, rows: list, comparisons: list) -> str:
    lines = [f"## Table 1 over seeds {', '.join(map(str, seeds))}: test accuracy %", "",
             "| model | mean | min–max | seeds |", "| --- | --- | --- | --- |"]
    for r in rows:
        depths = f" (depths {', '.join(map(str, r['depths']))})" if r["depths"] else ""
        lines.append(f"| {r['model']}{depths} | {100 * r['mean']:.2f} | {100 * r['min']:.2f}–{100 * r['max']:.2f} "
                     f"| {r['seeds']} |")
    if comparisons:
        lines += ["", "## Pruned at M against SubResNet-M trained from scratch (points, seed by seed)", "",
                  "| network | M | mean | min–max | within one point |", "| --- | --- | --- | --- | --- |"]
        for c in comparisons:
            lines.append(f"| {c['variant']} | {c['sub_depth']} | {c['mean']:+.2f} | {min(c['points']):+.2f}–"
                         f"{max(c['points']):+.2f} | {c['within_one_point']} of {len(c['points'])} |")
    return "\n".join(lines) + "\n"
