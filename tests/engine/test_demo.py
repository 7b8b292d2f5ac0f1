"""``yofo demo``: the whole pipeline on a micro checkpoint (and, slow, with training), and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import yofo.demo as demo
from yofo.cli import main
from yofo.config import load_config
from yofo.engine.checkpoint import save_model
from yofo.errors import CheckpointError
from yofo.model.yofo import build_model
from yofo.video_io import open_video

MICRO_MODEL = {
    "image_encoder": {"arch": "resnet18", "width": 8},
    "text_encoder": {"name": "all-MiniLM-L6-v2", "max_tokens": 24, "store_weights": False},
    "fm": {"dim": 16, "key_dim": 8}, "meta_transfer": {"feature_dim": 16}, "decoder": {"width": 8},
    "target_dim": 4, "input_size": [64, 64],
}
# The benchmark the micro checkpoint claims to be trained on: 64×64, 6 frames (read back from its metadata).
SYNTH = {"generator": "yofo synth", "seed": 3, "size": [64, 64], "frames": 6, "train": 4, "valid": 2}


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro checkpoint with the benchmark settings in its metadata and a training log beside it."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = build_model(load_config(None, [f"model.{k}={json.dumps(v)}" for k, v in MICRO_MODEL.items()]).model)
    save_model(model.eval(), folder / "micro.safetensors", {"synth": json.dumps(SYNTH)})
    with open(folder / "micro.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "epoch", "stage", "loss", "lr", "clips_per_s", "elapsed"])
        for step in range(5, 45, 5):
            writer.writerow([step, 1, 1 if step <= 20 else 2, 100 / step, 1e-3, 4.0, 3 * step])
    return folder / "micro.safetensors"


def test_demo_end_to_end(shipped, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--checkpoint", str(shipped), "--videos", "1", "--no-progress"]) == 0
    assert "J&F" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    ev = summary["evaluation"]
    for key in ("J&F", "J", "F", "per_kind", "per_cue", "control", "speed"):
        assert key in ev
    assert summary["data"] == {"seed": 3, "size": [64, 64], "frames": 6, "source": f"{shipped} metadata", "valid": 2}
    assert ev["speed"]["videos"] == 2 and ev["speed"]["frames"] == 12  # the settings came from the metadata
    assert 0 <= ev["control"]["J&F"] <= 1 and ev["control"]["objects"] == ev["objects"]
    assert len(summary["checkpoint_sha256"]) == 64

    overlay = open_video(out / summary["overlays"][0]["file"])
    frames = list(overlay)
    panel = 64 * demo.OVERLAY_SCALE
    assert len(frames) == 6 and frames[0].shape[1] == 3 * panel  # frame | prediction | ground truth
    assert panel < frames[0].shape[0] <= 1.25 * panel  # the legend is a strip below the panels
    with Image.open(out / "training_curve.png") as image:
        assert image.size[0] > 300
    assert summary["training_curve"]["steps"] == 40 and summary["training_curve"]["minutes"] == 2.0

    report = (out / "report.md").read_text()
    for text in ("## Results", "## Language-blind control", "training_curve.png", summary["checkpoint_sha256"],
                 summary["overlays"][0]["sentences"][0], "using appearance" if "appearance" in ev["per_cue"] else ""):
        assert text in report
    # the paragraph on what a model that cannot see motion could reach (the micro benchmark has such sentences)
    assert "## Motion" in report and f"{ev['motion_blind']['chance']:.3f}" in report
    # the grounding check: every micro video has >= 2 objects, so every sentence is checked
    grounding = ev["grounding"]
    assert grounding["sentences"] == ev["objects"] and 0 <= grounding["grounded"] <= grounding["sentences"]
    assert "## Grounding check" in report
    # single-cue sentences by what they name, and J at the first frames, as in metrics.json
    assert ev["per_named"]  # the micro benchmark has single-cue sentences
    for name, value in ev["per_named"].items():
        assert f"| {name} | {value['J&F']:.3f} |" in report
    assert "| expressions | frame 0 | frame 1 | frame 2 | frame ≥3 |" in report
    assert "| all | " + " | ".join(f"{v:.3f}" for v in ev["per_frame"]["all"]) + " |" in report
    assert f"**{grounding['grounded']} of {grounding['sentences']} sentences" in report
    assert (out / "eval" / "per_object.csv").is_file() and any((out / "eval" / "predictions").rglob("*.png"))


def test_motion_paragraph_says_whether_the_model_sees_motion():
    blind = {"expressions": 10, "others": 30, "J&F": 0.3, "chance": 0.4, "bound": 0.85}
    paper = "\n".join(demo._motion_blind_lines(blind))
    assert "no motion-aware feature mining" in paper and "0.400" in paper and "0.867 on the other 30" in paper
    motion = "\n".join(demo._motion_blind_lines(blind, window=4))
    assert "`model.fm.motion.window=4`" in motion and "compares the last 4 frames" in motion and "0.400" in motion
    assert "no motion-aware" not in motion and "on the other 30" not in motion
    assert demo._motion_blind_lines(None, window=4) == []


def test_demo_without_training_log(shipped, tmp_path):
    summary = demo.run_demo(tmp_path / "demo", shipped, training_log=tmp_path / "none.csv", videos=0, valid=1,
                            progress=False)
    assert "file" not in summary["training_curve"] and not (tmp_path / "demo" / "training_curve.png").exists()
    assert "No training log found" in (tmp_path / "demo" / "report.md").read_text()


def test_demo_without_checkpoint(tmp_path, capsys):
    missing = tmp_path / "checkpoints" / "yofo-synthetic.safetensors"
    with pytest.raises(CheckpointError, match="--train"):
        demo.run_demo(tmp_path / "demo", missing)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(missing) in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_demo_trains_within_a_budget(tmp_path, monkeypatch):
    """`--train --minutes`: calibrate, compress the schedule, train, then demonstrate the trained model."""
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump({
        "model": MICRO_MODEL, "device": "cpu",
        "data": {"num_frames": 2, "max_gap": 4},
        "train": {"batch_size": 2, "iters_per_epoch": 1000, "log_every": 1, "checkpoint_every": 1000,
                  "stage1": {"epochs": 2, "milestones": [1]}, "stage2": {"epochs": 1, "milestones": []}},
    }))
    monkeypatch.setattr(demo, "CONFIG", str(config))
    monkeypatch.setattr(demo, "DEFAULT_SYNTH", {**demo.DEFAULT_SYNTH, **SYNTH})
    summary = demo.run_demo(tmp_path / "demo", train=True, minutes=0.5, videos=1, progress=False)
    training = summary["training"]
    assert training["overrides"][0].startswith("train.iters_per_epoch=")
    per_epoch = int(training["overrides"][0].split("=")[1])
    assert 1 <= per_epoch < 1000 and training["steps"] == 3 * per_epoch  # compressed to the budget
    with open(tmp_path / "demo" / "train" / "metrics.csv", newline="") as handle:
        assert int(list(csv.DictReader(handle))[-1]["step"]) == training["steps"]
    assert summary["checkpoint"] == "train/model.safetensors" and summary["training_curve"]["file"]
    assert "Trained here, as" in (tmp_path / "demo" / "report.md").read_text()


def test_overlay_layout():
    """Frame untouched | prediction | ground truth, one legend line per sentence in a strip below them."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    ids = np.zeros((96, 160), np.uint8)
    ids[20:50, 30:70] = 1
    texts = ["the big red circle", "the shape moving left", "the small thing that bounces from side to side",
             "the leftmost green square that does not move at the bottom of the frame, far away from the rest"]
    out = demo.overlay_frame(frame, ids, ids, texts)
    scale = demo.OVERLAY_SCALE
    height, width = 96 * scale, 160 * scale
    assert out.shape[1] == 3 * width and height < out.shape[0] <= 1.25 * height
    enlarged = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    assert np.array_equal(out[:height, :width], enlarged)  # the frame's own colours, untouched
    masked = out[:height, width : 2 * width]
    assert not np.array_equal(masked[20 * scale + 5, 30 * scale + 5], enlarged[20 * scale + 5, 30 * scale + 5])
    assert np.array_equal(masked[80 * scale, 150 * scale], enlarged[80 * scale, 150 * scale])  # background as is
    assert np.array_equal(out[:height, 2 * width :], masked)  # same ids: ground truth drawn the same way
    strip = out[height:]
    assert strip.any()  # the sentences are written
    # one line per sentence in two columns: the swatch of sentence k has palette colour k
    from yofo.video_io import DAVIS_PALETTE
    for k in range(1, 5):
        assert (strip == DAVIS_PALETTE[k]).all(axis=-1).sum() > 50
    # a single sentence on a small video: still a readable font (>= 12 px) in a thin strip
    small = demo.overlay_frame(frame[:32, :32], ids[:32, :32], ids[:32, :32], texts[:1])
    assert 32 * scale + 12 <= small.shape[0] <= 32 * scale + 30
