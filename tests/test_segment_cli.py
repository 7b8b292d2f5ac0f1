"""``yofo segment``: palette PNGs, overlay.mp4, stride, real DAVIS frames, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from yofo.cli import main
from yofo.engine.checkpoint import load_model, save_model
from yofo.predictor import VideoSegmenter, label_map
from yofo.video_io import Mp4Writer, open_video

TEXTS = ["the red square", "the dark background"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, random_model) -> Path:
    model = random_model().eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """An mp4 of 5 frames (64×96): a red square moving right over grey."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with Mp4Writer(path, fps=10) as writer:
        for t in range(5):
            frame = np.full((64, 96, 3), 90, dtype=np.uint8)
            frame[20:40, 10 + 8 * t : 30 + 8 * t] = (220, 30, 30)
            writer.write(frame)
    return path


def _segment(video, checkpoint, out, *extra: str) -> int:
    args = ["segment", str(video), "--checkpoint", str(checkpoint), "--out", str(out)]
    for text in TEXTS:
        args += ["--text", text]
    return main(args + list(extra))


def test_segment_mp4_with_overlay_and_stride(video, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(video, checkpoint, out, "--overlay", "--stride", "2") == 0
    assert "frames/s" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00002.png", "00004.png", "overlay.mp4",
                                                     "sentences.json"]
    assert json.loads((out / "sentences.json").read_text()) == {"1": TEXTS[0], "2": TEXTS[1]}
    overlay = open_video(out / "overlay.mp4")
    assert overlay.size == (64, 96) and len(list(overlay)) == 3

    # the PNGs are the predictor's label map of the same frames: highest logit wins, 0 where none > 0
    segmenter = VideoSegmenter(load_model(checkpoint))
    segmenter.start(TEXTS)
    for name, frame in open_video(video, stride=2).iter_named():
        with Image.open(out / f"{name}.png") as image:
            assert image.mode == "P"
            ids = np.asarray(image)
        assert ids.shape == (64, 96) and set(np.unique(ids)) <= {0, 1, 2}
        assert np.array_equal(ids, label_map(segmenter.step_logits(frame)))


def test_segment_real_davis_frames(real_data, checkpoint, tmp_path):
    source = real_data / "DAVIS" / "JPEGImages" / "480p" / "blackswan"
    if not source.is_dir():
        pytest.skip("blackswan frames are absent")
    frames = tmp_path / "blackswan"
    frames.mkdir()
    for path in sorted(source.glob("*.jpg"))[:3]:
        shutil.copy(path, frames / path.name)
    out = tmp_path / "out"
    assert main(["segment", str(frames), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--text", "a black feathered swan"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    with Image.open(out / names[0]) as image:
        assert image.size == (854, 480) and image.mode == "P"


def test_bad_input_is_one_line_exit_2_and_keeps_existing_output(video, checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "not_yofo.safetensors").touch()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"earlier result")

    cases = [
        ([str(tmp_path / "missing.mp4")], "no such file"),
        ([str(tmp_path / "corrupt.mp4")], "not a readable video"),
        ([str(tmp_path / "empty")], "no frames"),
        ([str(tmp_path / "notes.txt")], "unsupported file type"),
        ([str(video), "--text", ""], "empty"),
        ([str(video), "--text", TEXTS[0]], "twice"),
        ([str(video), "--stride", "0"], "stride"),
    ]
    for extra, message in cases:
        assert _segment(extra[0], checkpoint, out, *extra[1:]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    for bad_checkpoint, message in [(tmp_path / "none.safetensors", "not found"),
                                    (tmp_path / "not_yofo.safetensors", "not a safetensors file"),
                                    (tmp_path / "other.safetensors", "not a yofo checkpoint")]:
        assert _segment(video, bad_checkpoint, out) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.png"]


def test_failure_mid_video_leaves_no_half_written_output(checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, height in enumerate([48, 48, 40]):  # the third frame has another size: decoding fails there
        Image.fromarray(np.full((height, 64, 3), 100, np.uint8)).save(frames / f"{index:05d}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"earlier result")
    assert _segment(frames, checkpoint, out, "--overlay") == 2
    assert "00002.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out"]  # temp folder removed
