"""Issue 30's benchmarks at tiny sizes on a CPU: the one-call limit script end to end, the throughput benchmark's
--cuda-graph path, and a whole run against its step benchmark."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SECTIONS = ("env", "roofline", "eager", "graphed", "cudnn", "correctness", "concurrent")


def test_limit_script_runs_every_section_on_a_cpu_and_counts_resnet54(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_limit.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines and all(line.startswith("[CPU] ") for line in lines)          # every line names the device
    assert not [line for line in lines if "FAILED" in line or "skipped" in line]
    for section in SECTIONS:                                                    # each section ran and was timed
        assert any(line.startswith(f"[CPU] {section}: ") and line.endswith(" s") for line in lines), section
    roofline = next(line for line in lines if "the paper's ResNet-54" in line)
    assert "253,149,824 multiply-adds" in roofline and "1.52 GFLOP per trained image" in roofline
    assert sum(line.startswith("[CPU] graphed ") and "images/s" in line for line in lines) == 4 + 2
    assert sum("NHWC/NCHW" in line for line in lines) == 3                      # one A/B line per stage
    differences = [line for line in lines if "max |w - w_eager|" in line]
    assert len(differences) == 2 and all(line.endswith("0.00e+00") for line in differences)   # float32, one CPU
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["kernels.txt", "limit.json", "limit.log"]                 # at most 4 files
    numbers = json.loads((tmp_path / "limit.json").read_text())
    assert numbers["roofline"]["paper_multiply_adds"] == 253_149_824
    assert set(numbers) >= {"env", "roofline", "eager", "graphed", "cudnn", "layouts", "correctness"}
    assert (tmp_path / "limit.log").read_text().splitlines() == lines


def test_throughput_benchmark_with_cuda_graph_runs_on_a_cpu():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "resnet54_throughput.py"), "--blocks", "1",
                           "--width", "4", "--batch", "8", "--rounds", "1", "--steps", "1", "--cuda-graph"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "cuda_graph True" in lines[0] and lines[-1].startswith("best batch size")


def test_whole_run_benchmark_compares_a_run_with_its_steps_at_a_tiny_size():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "whole_run.py"), "--width", "4", "--blocks", "1",
                           "--epochs", "1,2", "--train-subset", "256"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device cpu") and lines[1].startswith("steps: ")
    assert sum(line.startswith(("1 epochs: whole", "2 epochs: whole")) for line in lines) == 2
    assert "whole/steps" in lines[-1] and lines[-1].startswith("at the paper's 165 epochs")
