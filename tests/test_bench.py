"""``yofo bench``: the JSON report has every figure, positive (no timing assertions)."""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch

from yofo.cli import main
from yofo.commands.bench import (
    BenchSpec, bench_segmenter, build_bench_model, count_gflops, peak_rss_mb, synthetic_frames, time_pipeline,
    timed_components,
)


def test_bench_json_report(capsys):
    code = main(["bench", "--config", "tiny", "--size", "64x96", "--frames", "2", "--warmup", "1",
                 "--objects", "1,3", "--memory-frames", "3", "--no-channels-last", "--json"])  # one child process: it imports torch
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_encoder_ms"] > 0
    assert set(result["pipeline_ms"]) == {"1", "3"} and min(result["pipeline_ms"].values()) > 0
    assert set(result["peak_rss_mb"]) == {"3"} and min(result["peak_rss_mb"].values()) > 0
    assert result["text_encoder"] == "all-MiniLM-L6-v2" and result["size"] == [64, 96]
    assert result["channels_last"] is False
    gflops = result["gflops"]  # each sentence adds its own feature mining, solver and decoder arithmetic
    assert 0 < gflops["image_encoder"] < gflops["pipeline"]["1"] < gflops["pipeline"]["3"]
    for components in result["components_ms"].values():
        assert {"image_encoder", "solver", "fm_text_part", "decoder_text_part"} <= set(components)
        assert all(ms >= 0 for name, ms in components.items() if name != "other")
    # tiny's encoder is not the paper's: a ResNet-50 encoder is timed beside it, with the ratios to it
    assert result["resnet50_encoder_ms"] > 0 and set(result["pipeline_vs_resnet50_encoder"]) == {"1", "3"}
    assert gflops["resnet50_encoder"] > 20 * gflops["image_encoder"]


def test_text_encoder_fallback_and_component_timers():
    spec = BenchSpec("tiny", ("model.text_encoder.name=/nonexistent/bert-base-uncased",), None, (64, 96), "cpu")
    model, name, note = build_bench_model(spec)
    assert name == "all-MiniLM-L6-v2" and "/nonexistent/bert-base-uncased" in note
    forward = model.decoder.forward
    with timed_components(model) as totals:
        assert model.decoder.forward is not forward
    assert model.decoder.forward == forward  # the class's methods are back
    assert set(totals) >= {"image_encoder", "phi", "solver"}


@pytest.mark.parametrize("window", [0, 2])
def test_the_motion_map_is_timed_apart_when_on(window):
    spec = BenchSpec("tiny", (f"model.fm.motion.window={window}",), None, (64, 96), "cpu", channels_last=False)
    result = time_pipeline(bench_segmenter(spec, build_bench_model(spec)[0]), (64, 96), 2, frames=2, warmup=1)
    if window:  # per frame, shared by the sentences, apart from feature mining's image part
        assert result["components"]["motion_map"] > 0
    else:
        assert "motion_map" not in result["components"]
    assert result["components"]["fm_image_part"] > 0


def test_count_gflops_counts_multiply_adds_twice():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    image = torch.zeros(1, 3, 10, 12)
    assert count_gflops(conv, image) == pytest.approx(2 * 10 * 12 * 8 * 3 * 9 / 1e9)
    assert count_gflops(torch.relu, image) == 0  # element-wise work is not counted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_of_a_spawned_child_is_its_own():
    ballast = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MB resident in this process
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        child = pool.submit(peak_rss_mb).result()
    assert peak_rss_mb() > ballast.size / 2**20 and child < peak_rss_mb() - 250  # not inherited from the parent


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--size", "64by96"])
    assert "HxW" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--frames", "0"]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", "x.safetensors", "model.memory.size=1"]) == 2
    assert "overrides" in capsys.readouterr().err


def test_synthetic_frames_are_lazy_and_move():
    frames = synthetic_frames((8, 16), 3)
    first, second = next(frames), next(frames)
    assert first.shape == (8, 16, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    assert len(list(frames)) == 1
