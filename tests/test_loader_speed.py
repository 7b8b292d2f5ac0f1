"""benchmarks/loader_speed.py runs end to end on a small synthetic folder it makes itself (no timing asserted)."""

from __future__ import annotations

import json
import sys


def test_loader_speed_reports_clips_per_second_per_worker_count(benchmark_script, tmp_path, monkeypatch, capsys):
    loader_speed = benchmark_script("loader_speed")
    data = tmp_path / "synth"
    monkeypatch.setattr(sys, "argv", ["loader_speed.py", "--data", str(data), "--size", "64x96", "--workers", "0,1",
                                      "--batches", "2", "--warmup", "1", "--json", "model.input_size=[64,96]",
                                      "data.num_frames=2"])
    loader_speed.main()
    result = json.loads(capsys.readouterr().out)
    assert (data / "meta_expressions" / "train" / "meta_expressions.json").is_file()
    assert result["config"] == "paper" and result["input_size"] == [64, 96] and result["num_frames"] == 2
    assert set(result["clips_per_s"]) == {"0", "1"} and min(result["clips_per_s"].values()) > 0
