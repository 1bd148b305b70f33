"""benchmarks/streamed_folder.py end to end at a tiny size: the folder is written, every contender trains, the
streamed runs end with the in-memory run's weights and the table is printed (the speed is the benchmark's
business)."""
import pytest
import torch

from scripts import load_script


def test_streamed_folder_benchmark_runs_every_contender_at_a_tiny_size(capsys):
    pytest.importorskip("PIL.Image")
    module = load_script("benchmarks/streamed_folder.py")
    threads = torch.get_num_threads()
    result = module.main(["--images", "80", "--base", "2", "--batch", "32", "--workers", "0,1", "--rounds", "1",
                          "--threads", "1"])
    assert torch.get_num_threads() == threads
    assert result["same"] == {"memory": True, "stream-w0": True, "stream-w1": True}
    assert result["ratios"]["memory"] == 1.0 and all(r > 0 for r in result["ratios"].values())
    lines = capsys.readouterr().out.splitlines()
    assert "80 training and 20 test PNG files" in lines[0]
    assert sum(line.startswith(("| memory", "| stream-w0", "| stream-w1")) for line in lines) == 3
