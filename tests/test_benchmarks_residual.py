"""benchmarks/residual_network.py end to end at tiny sizes: every contender takes its steps and the table and
the target ratios are printed (the speed itself is the benchmark's business, not this test's)."""
import torch

from scripts import load_script


def _benchmark():
    return load_script("benchmarks/residual_network.py")


def test_residual_network_benchmark_runs_every_contender_at_a_tiny_size(capsys):
    threads = torch.get_num_threads()
    result = _benchmark().main(["--base", "2", "--batch", "2", "--steps", "2", "--warmup", "1", "--rounds", "1",
                                "--threads", "1", "--no-channels-last"])
    assert torch.get_num_threads() == threads                        # the caller's thread count restored
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device cpu") and "base 2" in lines[0] and "batch 2" in lines[0]
    assert {name: len(times) for name, times in result["times"].items()} == {
        "plain": 2, "standard": 2, "ws": 2, "full": 2}
    assert all(t > 0 for times in result["times"].values() for t in times)
    assert set(result["ratios"]) == {"ws/standard", "full/standard", "standard/plain"}
    assert sum(line.startswith(("| plain", "| standard", "| ws", "| full")) for line in lines) == 4
    assert sum("target <= " in line for line in lines) == 3
