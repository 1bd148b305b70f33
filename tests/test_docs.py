"""The documentation runs as written (issue 21: docs that cannot drift).

What is checked, for README.md and every docs/*.md:

- every ```python block runs: the blocks of one file in order, in one namespace, in a temporary
  working directory (matplotlib on Agg). A statement whose line ends in a comment ``# ... prints: TEXT``
  must print TEXT: words exactly, ``...`` anything, and every number to the precision the doc quotes
  it (``1.5581`` is 1.55805..1.55815, ``2.7e-4`` is 2.65e-4..2.75e-4, ``5`` is 5);
- every ```bash (sh, shell, console) block's commands: bash itself expands the blocks (loops,
  variables, ``&&``) with nothing on its PATH, so that each command it would start is recorded instead
  (``command_not_found_handle``); the test then runs the recorded ``turnpike`` commands in order, in one
  temporary folder per doc, in-process through ``turnpike.cli._main.main`` (return code 0), with the
  small options of :data:`SMALL` appended: argparse keeps an option's last value, so they override the
  doc's full-size settings. ``python experiments/...`` scripts run as written through ``runpy``; the
  other programs a doc names are listed in :data:`NOT_RUN` with the reason, and any other one fails;
- an untyped ``` block right after ``<!-- docs-test: output of `turnpike ...` -->`` is that command's
  printed output: the command runs at full size (only ``--no-plots --quiet`` added: no figures, no
  progress bar, the same printed lines) and each line of the block must match a printed line, in order,
  with the same rules as ``prints:`` (times are elided as ``...`` in the docs);
- a block right after ``<!-- docs-test: skip (reason) -->`` is not run; the reason is required and
  shows in the doc.

The measured tables of the docs (with their date and command) are records, not promises; the one of
docs/spirals.md is re-measured by the slow test at the end.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from turnpike.cli._main import main  # noqa: E402
from turnpike.data import load_raw_images, write_idx  # noqa: E402
from turnpike.data._images import FASHION_MNIST_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")

#: small options appended to each documented ``turnpike COMMAND`` (argparse keeps an option's last value,
#: so they override the doc's full-size ones): the same code path at CI size. Every command gets
#: ``--no-plots`` (figures are tested in the commands' own tests) and ``--quiet`` where it has it.
RESNET_SMALL = ["--width", "4", "--epochs", "1", "--milestones", "", "--train-subset", "64", "--test-subset",
                "32", "--batch-size", "32", "--no-plots", "--quiet"]     # the doc's depth (blocks) is kept
TRAIN_SMALL = ["--model-option", "base=2", "--epochs", "1", "--milestones", "", "--train-subset", "64",
               "--test-subset", "32", "--batch-size", "32", "--no-plots", "--quiet"]   # the doc's model, 2 channels
SMALL = {
    "spirals": ["--steps", "40,40", "--no-plots", "--quiet"],                # 80 optimiser steps, not 400
    "node-spirals": ["--horizons", "2", "--steps", "10,10", "--starts", "1", "--check-method", "none",
                     "--no-plots", "--quiet"],                               # T = 2 (K = 4), 20 steps, 1 start
    "mnist": ["--depth", "3", "--baselines", "2", "--epochs", "1", "--subset", "100", "--batch-size", "50",
              "--no-plots", "--quiet"],                                      # 3 layers, 100 images, 1 epoch
    "resnet54": RESNET_SMALL,
    "resnet54-study": RESNET_SMALL,
    "train": TRAIN_SMALL,
    "train-study": TRAIN_SMALL,
    "early-exit": ["--thresholds", "0,0.9,1", "--no-plots"],                 # 3 thresholds, each timed
    "depth-bounds": [],
    "certify": [],
}
# Besides: ``--seeds A-B`` becomes ``--seeds A-(A+1)`` (two seeds still take the several-seeds path and
# its summary); ``--dataset fashion-mnist`` gets ``--data`` (a stand-in folder, see data_folders) where
# Debian's Fashion-MNIST is not installed; ``--device cuda`` commands run only where torch sees a GPU.
#: placeholders of the docs, replaced by a folder of IDX files the test writes (real MNIST images)
PLACEHOLDERS = ("/path/to/mnist",)
#: programs the docs name that this test does not run, with the reason (argv prefix; its last word a prefix)
NOT_RUN = {
    ("bash", "scripts/setup.sh"): "creates .venv and installs turnpike: the environment this test runs in",
    ("python", "-m", "pytest"): "the test suite, of which this test is part",
    ("python", "benchmarks/"): "speed benchmarks: they time runs of minutes, the examples they time run here",
}


@dataclass
class Block:
    doc: Path
    lang: str
    code: str
    line: int                  # line of the doc where the code starts (1-based)
    marker: str | None         # the ``<!-- docs-test: ... -->`` right before the fence

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->$")
OUTPUT_MARKER = re.compile(r"^output of `(turnpike [^`]+)`$")
SKIP_MARKER = re.compile(r"^skip \((.+)\)$")


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` with their language and the docs-test marker before them."""
    lines = doc.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{doc.relative_to(ROOT)}:{index + 1}: unclosed code block"
        before = next((lines[j].strip() for j in range(index - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        found.append(Block(doc, opening.group(1).lower(), "\n".join(lines[index + 1:end]) + "\n", index + 2,
                           marker.group(1) if marker else None))
        index = end + 1
    for block in found:
        assert block.marker is None or OUTPUT_MARKER.match(block.marker) or SKIP_MARKER.match(block.marker), \
            f"{block.where}: unknown docs-test marker {block.marker!r} (skip (reason) or output of `turnpike ...`)"
    return found


def skipped(block: Block) -> bool:
    return block.marker is not None and SKIP_MARKER.match(block.marker) is not None


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def docs_with(predicate) -> list[Path]:
    return [doc for doc in DOCS if any(predicate(block) for block in blocks(doc))]


# -- quoted figures --------------------------------------------------------------------------------

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _half_unit(quoted: str) -> float:
    """Half a unit in the last digit the doc quotes: 1.5581 -> 5e-5, 2.7e-4 -> 5e-6, 5 -> 0.5."""
    mantissa, _, exponent = quoted.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def quoted_match(quoted: str, printed: str) -> str | None:
    """None if the printed line is what ``quoted`` shows, else what differs. Words match exactly,
    ``...`` matches anything, numbers match to the precision quoted; runs of spaces are one space."""
    tokens = quoted.split()
    pattern, numbers = [], []
    for token in tokens:
        if token == "...":
            pattern.append(r".*?")
        elif NUMBER.fullmatch(token):
            pattern.append(f"({NUMBER.pattern})")
            numbers.append(token)
        else:
            pattern.append(re.escape(token).replace(re.escape("..."), ".*?"))
    found = re.fullmatch(r"\s*" + r"\s+".join(pattern) + r"\s*", printed.strip(), re.S)
    if found is None:
        return f"expected {quoted!r}, printed {printed.strip()!r}"
    for token, value in zip(numbers, found.groups()):
        if abs(float(value) - float(token)) > _half_unit(token) * (1 + 1e-9):
            return f"expected {token} (to the digits quoted) in {quoted!r}, printed {value} in {printed.strip()!r}"
    return None


def assert_lines_printed(expected_lines, printed: str, where: str) -> None:
    """Every line of ``expected_lines`` matches a printed line, in order."""
    printed_lines = [line for line in printed.splitlines() if line.strip()]
    position = 0
    for expected in (line for line in expected_lines if line.strip()):
        for index in range(position, len(printed_lines)):
            if quoted_match(expected, printed_lines[index]) is None:
                position = index + 1
                break
        else:
            nearest = "\n".join(filter(None, (quoted_match(expected, line) for line in printed_lines)))
            raise AssertionError(f"{where}: the doc quotes the line\n  {expected}\nwhich was not printed "
                                 f"(after the lines matched before it). Printed:\n{printed}\n{nearest}")


def test_quoted_figures_match_to_the_digits_quoted():
    assert quoted_match("1.5581 1.5581 0.5", "1.5581192402425754 1.558119240242533 0.5") is None
    assert quoted_match("1.5581 1.5581 0.5", "1.5128481309645265 1.5128481309644874 0.5") is not None
    assert quoted_match("2.7e-4", "0.0002670458532271811") is None
    assert quoted_match("3.3e-4", "0.00043933021044177575") is not None
    assert quoted_match("5 1.0", "5 1.0") is None and quoted_match("5 1.0", "4 1.0") is not None
    assert quoted_match("with stage cost  1.000 1.000  5  26  0.037  5  1.000  ...",
                        "with stage cost        1.000 1.000         5    26   0.037      5   1.000    3.00") is None
    assert quoted_match("seed 0: ε = 0.2013 (= 0.1 × initial), ...", "seed 0: ε = 0.2013 (= 0.1 × initial), 3.9 s") is None
    assert quoted_match("baseline 0.996 None -", "baseline 0.956 None -") is not None
    assert quoted_match("baseline 0.996 None -", "baseline 0.996 4 -") is not None


# -- python examples -------------------------------------------------------------------------------

PRINTS = re.compile(r"#.*\bprints:\s*(.+?)\s*$")


def statements(block: Block):
    """(code object, quoted output or None) for each top-level statement of a python block, with the
    doc's line numbers in tracebacks."""
    import ast

    tree = ast.parse(block.code, filename=str(block.doc))
    ast.increment_lineno(tree, block.line - 1)
    code_lines = block.code.splitlines()
    quoted = {block.line + i: m.group(1) for i, line in enumerate(code_lines) if (m := PRINTS.search(line))}
    ends = {node.end_lineno for node in tree.body}
    stray = sorted(set(quoted) - ends)
    assert not stray, f"{doc_id(block.doc)}:{stray}: a `prints:` comment must end a top-level statement"
    for node in tree.body:
        yield compile(ast.Module([node], type_ignores=[]), str(block.doc), "exec"), quoted.get(node.end_lineno), \
            node.end_lineno


@pytest.mark.parametrize("doc", docs_with(lambda b: b.lang == "python"), ids=doc_id)
def test_python_examples_run_and_print_what_the_doc_quotes(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    ran = 0
    for block in blocks(doc):
        if block.lang != "python" or skipped(block):
            continue
        for code, quoted, line in statements(block):
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(code, namespace)
            if quoted is not None:
                difference = quoted_match(quoted, output.getvalue())
                assert difference is None, f"{doc_id(doc)}:{line}: {difference}"
        ran += 1
    assert ran, f"{doc_id(doc)}: every python block is skipped"


# -- command sequences -----------------------------------------------------------------------------

RECORDER = r"""
command_not_found_handle() {
    { for argument in "$@"; do printf '%s\037' "$argument"; done; printf '\036'; } >> "$DOCS_TEST_LOG"
    return 0
}
"""


def recorded_commands(block: Block, folder: Path) -> list[list[str]]:
    """The commands bash would start for ``block`` (run from ``folder`` with an empty PATH)."""
    code = re.sub(r"(?<![\w/.])\.venv/bin/", "", block.code)       # .venv/bin/turnpike -> turnpike
    log = folder / ".docs-test-commands"
    log.write_text("")
    empty = folder / ".docs-test-empty-path"
    empty.mkdir(exist_ok=True)
    result = subprocess.run(["/bin/bash", "-c", RECORDER + code], cwd=folder, capture_output=True, text=True,
                            env={"PATH": str(empty), "DOCS_TEST_LOG": str(log), "HOME": str(folder)})
    assert result.returncode == 0, f"{block.where}: bash could not read the block: {result.stderr}"
    return [record.split("\037")[:-1] for record in log.read_text().split("\036")[:-1]]


def _small_options(args: list[str], data: dict) -> list[str] | None:
    """The documented command with the small options appended; None if it cannot run here."""
    command, rest = args[0], args[1:]
    assert command in SMALL, f"`turnpike {command}`: add its small options to SMALL in tests/test_docs.py"
    rest = [data["placeholders"].get(arg, arg) for arg in rest]
    if "--device" in rest and rest[rest.index("--device") + 1].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None                                     # `--device cuda` runs where torch sees a GPU
    extra = list(SMALL[command])
    if "--seeds" in rest:
        first = int(re.split(r"[-,]", rest[rest.index("--seeds") + 1])[0])
        extra += ["--seeds", f"{first}-{first + 1}"]
    if "fashion-mnist" in rest and "--data" not in rest and not FASHION_MNIST_DIR.is_dir():
        extra += ["--data", data["fashion-mnist"]]          # Debian's Fashion-MNIST is not installed here
    return [command, *rest, *extra]


def _run_turnpike(argv: list[str], where: str) -> str:
    output, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(errors):
        code = main(argv)
    assert code == 0, (f"{where}: `turnpike {shlex.join(argv)}` returned {code}\n"
                       f"{output.getvalue()[-3000:]}\n{errors.getvalue()[-3000:]}")
    return output.getvalue()


def _run_script(argv: list[str], where: str) -> None:
    script = ROOT / argv[0]
    assert script.is_file(), f"{where}: the doc runs {argv[0]}, which does not exist"
    saved = sys.argv
    sys.argv = [str(script), *argv[1:]]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, None), f"{where}: `python {shlex.join(argv)}` exited with {exit.code}"
    finally:
        sys.argv = saved


def _not_run_reason(argv: list[str]) -> str | None:
    for prefix, reason in NOT_RUN.items():
        head, last = prefix[:-1], prefix[-1]
        if len(argv) >= len(prefix) and tuple(argv[:len(head)]) == head and argv[len(head)].startswith(last):
            return reason
    return None


@pytest.fixture(scope="module")
def data_folders(tmp_path_factory) -> dict:
    """IDX folders for the docs' placeholders and for Fashion-MNIST where Debian's is missing: 200
    training and 100 test images of the shipped MNIST subset (a stand-in of the same format)."""
    (train_x, train_y), (test_x, test_y), _ = load_raw_images("mnist")
    folder = tmp_path_factory.mktemp("idx")
    for stem, images, labels in (("train", train_x[:200], train_y[:200]), ("t10k", test_x[::10], test_y[::10])):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return {"fashion-mnist": str(folder), "placeholders": {placeholder: str(folder) for placeholder in PLACEHOLDERS}}


def _command_blocks(block: Block) -> bool:
    return block.lang in SHELL and not skipped(block)


@pytest.mark.parametrize("doc", docs_with(_command_blocks), ids=doc_id)
def test_command_sequences_run_in_a_fresh_folder(doc, tmp_path, monkeypatch, data_folders):
    monkeypatch.chdir(tmp_path)
    ran, not_run = [], []
    for block in filter(_command_blocks, blocks(doc)):
        for argv in recorded_commands(block, tmp_path):
            where = block.where
            if argv[:1] == ["python"] and argv[1:3] == ["-m", "turnpike"]:
                argv = ["turnpike", *argv[3:]]
            if argv[:1] == ["turnpike"]:
                small = _small_options(argv[1:], data_folders)
                if small is None:
                    not_run.append(shlex.join(argv))
                    continue
                _run_turnpike(small, where)
                ran.append(shlex.join(argv))
            elif argv[:1] == ["python"] and len(argv) > 1 and argv[1].startswith("experiments/"):
                _run_script(argv[1:], where)
                ran.append(shlex.join(argv))
            elif (reason := _not_run_reason(argv)) is not None:
                not_run.append(f"{shlex.join(argv)}: {reason}")
            else:
                raise AssertionError(f"{where}: the doc runs `{shlex.join(argv)}`; run it in tests/test_docs.py "
                                     f"or say in NOT_RUN why not")
    assert ran or not_run, f"{doc_id(doc)}: its command blocks hold no command"


def test_the_recorder_sees_what_bash_would_run(tmp_path):
    block = Block(ROOT / "README.md", "bash", "for M in 0 6; do .venv/bin/turnpike x --out runs/sub$M; done\n"
                  "bash scripts/setup.sh && PYTHONPATH=. python -m turnpike y 'a b'   # comment\n", 1, None)
    assert recorded_commands(block, tmp_path) == [["turnpike", "x", "--out", "runs/sub0"],
                                                  ["turnpike", "x", "--out", "runs/sub6"],
                                                  ["bash", "scripts/setup.sh"],
                                                  ["python", "-m", "turnpike", "y", "a b"]]
    assert _small_options(["resnet54-study", "--seeds", "1-10"], {"placeholders": {}})[-2:] == ["--seeds", "1-2"]
    assert _not_run_reason(["python", "benchmarks/node_adjoint.py", "--horizon", "10"]) is not None
    assert _not_run_reason(["python", "experiments/two_spirals.py"]) is None


# -- printed outputs the docs show -----------------------------------------------------------------

OUTPUT_FLAGS = ["--no-plots", "--quiet"]      # no figures and no progress bar: the same printed lines


def _output_blocks(block: Block) -> bool:
    return block.marker is not None and OUTPUT_MARKER.match(block.marker) is not None


@pytest.fixture(scope="module")
def command_output(tmp_path_factory):
    """What a documented command prints at full size, run once per command (README and docs/cli.md
    show the same run)."""
    cache = {}

    def run(command: str, where: str) -> str:
        if command not in cache:
            folder = tmp_path_factory.mktemp("output")
            previous = os.getcwd()
            os.chdir(folder)
            try:
                cache[command] = _run_turnpike([*shlex.split(command)[1:], *OUTPUT_FLAGS], where)
            finally:
                os.chdir(previous)
        return cache[command]

    return run


@pytest.mark.parametrize("doc", docs_with(_output_blocks), ids=doc_id)
def test_sample_outputs_are_what_the_command_prints(doc, command_output):
    for block in filter(_output_blocks, blocks(doc)):
        command = OUTPUT_MARKER.match(block.marker).group(1)
        assert_lines_printed(block.code.splitlines(), command_output(command, block.where), block.where)


def test_every_sample_table_is_marked_with_its_command():
    """A block that shows a command's printed table must say which command, so that it is checked."""
    for doc in DOCS:
        for block in blocks(doc):
            if block.lang == "" and re.search(r"^run\s+train\s+test\s+turnpike", block.code, re.M):
                assert _output_blocks(block), f"{block.where}: sample output without `<!-- docs-test: output of ...`"
    assert len(docs_with(_output_blocks)) >= 2          # README.md and docs/cli.md show `turnpike spirals`


def test_skips_are_rare_and_say_why():
    skips = [block for doc in DOCS for block in blocks(doc) if skipped(block)]
    assert len(skips) <= 2, [block.where for block in skips]
    assert all(SKIP_MARKER.match(block.marker).group(1).strip() for block in skips)


# -- measured tables -------------------------------------------------------------------------------

@pytest.mark.slow
def test_spirals_table_over_seeds_is_what_seeds_0_to_9_give(tmp_path):
    """docs/spirals.md's measured tables (one per CPU kind: the runs amplify their kernels' round-off),
    re-measured: `turnpike spirals --seeds 0-9` (about 40 s) must give one of them exactly."""
    doc = ROOT / "docs" / "spirals.md"
    tables = [block for block in doc.read_text().split("\n\n") if block.startswith("| seed | train | test |")]
    assert len(tables) == 2
    # a fresh process, as the doc's command runs: seed 0 depends on the thread count, which earlier tests in
    # this process may have changed
    subprocess.run([sys.executable, "-m", "turnpike", "spirals", "--seeds", "0-9", "--no-plots", "--quiet",
                    "--out", str(tmp_path / "s")], check=True, capture_output=True, cwd=ROOT)
    differences = []
    for table in tables:
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
        assert [row[0] for row in rows] == [str(seed) for seed in range(10)]
        differences.append([])
        for row in rows:
            metrics = json.loads((tmp_path / "s" / f"seed-{row[0]}" / "metrics.json").read_text())
            base = metrics["baseline"]
            measured = [metrics["train_accuracy"], metrics["test_accuracy"], metrics["turnpike_layer"],
                        metrics["num_layers_in_Q_eps"], metrics["control_norm_ratio"], metrics["pruned"]["depth"],
                        metrics["pruned"]["test_accuracy"], f"{base['train_accuracy']} / {base['test_accuracy']}",
                        "none" if base["turnpike_layer"] is None else base["turnpike_layer"]]
            differences[-1] += [f"seed {row[0]}: {d}" for d in (quoted_match(q, str(v)) for q, v in
                                                               zip(row[1:], measured)) if d is not None]
    assert not all(differences), f"docs/spirals.md: no table matches: {differences}"
