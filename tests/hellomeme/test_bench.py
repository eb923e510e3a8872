"""bench/gpu_throughput.py stays runnable: without CUDA it measures the tiny model on the CPU."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from .conftest import REPO


def test_gpu_throughput_bench_runs_tiny_on_cpu(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the bench runs full size; run it by hand")
    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "bench" / "gpu_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_throughput", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    results_file = tmp_path / "RESULTS.md"
    monkeypatch.setattr(bench._common, "RESULTS", results_file)
    results = bench.main(["--videos", "1", "--frames", "5", "--steps", "2", "--baseline-frames", "5"])
    assert results["ours_fps"] > 0 and results["baseline_fps"] > 0 and results["ratio"] > 0
    assert results["denoiser_tflops_per_image"] > 0
    text = results_file.read_text()
    assert "HelloMeme GPU throughput" in text and "ratio ours / baseline" in text and "commit" in text
