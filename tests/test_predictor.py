"""VideoSegmenter: streaming equals the clip forward, K sentences together equal K runs, pre/post-processing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from yofo.errors import ConfigError, InputError
from yofo.model.image_encoder import normalize
from yofo.predictor import VideoSegmenter, fit_size, label_map
from yofo.video_io import Mp4Writer, open_video

TEXTS = ["the red circle on the left", "a small square"]


@pytest.fixture(scope="module")
def model(random_model):
    """Tiny random model (input box 96×160) whose logits straddle 0, so masks are neither empty nor full."""
    model = random_model().eval()
    frame = torch.rand(1, 3, 96, 160)
    with torch.inference_mode():
        logits = model.step(normalize(frame), model.start(TEXTS[:1]))
        model.decoder.out_conv.bias -= logits.median()
    return model


@pytest.fixture(scope="module")
def frames():
    """Four uint8 frames (T, 96, 160, 3): a bright square moving over noise."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 120, size=(4, 96, 160, 3), dtype=np.uint8)
    for t in range(4):
        video[t, 20:60, 30 + 10 * t : 70 + 10 * t] = (230, 40, 40)
    return video


def test_streaming_equals_clip_forward(model, frames):
    segmenter = VideoSegmenter(model, device="cpu")
    segmenter.start(TEXTS[:1])
    streamed = np.stack([segmenter.step_logits(frame)[0] for frame in frames])  # (T, H, W)
    with torch.inference_mode():  # frames already have the model's input size: no resize, no padding
        clip = normalize(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
        offline = model(clip[None], TEXTS[:1])[0, :, 0].numpy()
    np.testing.assert_allclose(streamed, offline, rtol=1e-4, atol=1e-4 * np.abs(offline).max())
    masks = segmenter.segment(frames, TEXTS[:1])[TEXTS[0]]
    assert masks.dtype == bool and masks.shape == (4, 96, 160)
    assert 0 < masks.mean() < 1
    assert np.array_equal(masks, offline > 0)


def test_channels_last_is_the_same_function(model, frames):
    assert VideoSegmenter(model, device="cpu").memory_format == torch.channels_last  # the CPU default
    logits = {}
    for channels_last in (False, True):
        segmenter = VideoSegmenter(model, device="cpu", channels_last=channels_last)
        segmenter.start(TEXTS)
        logits[channels_last] = np.stack([segmenter.step_logits(frame) for frame in frames])
        weight = model.image_encoder.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    np.testing.assert_allclose(logits[True], logits[False], rtol=1e-4, atol=1e-4 * np.abs(logits[False]).max())


def test_sentences_together_equal_separate_runs(model, frames):
    segmenter = VideoSegmenter(model)
    segmenter.start(TEXTS)
    together = np.stack([segmenter.step_logits(frame) for frame in frames])  # (T, K, H, W)
    for k, text in enumerate(TEXTS):
        segmenter.start([text])
        alone = np.stack([segmenter.step_logits(frame)[0] for frame in frames])
        np.testing.assert_allclose(together[:, k], alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    masks = segmenter.segment(frames, TEXTS)
    assert list(masks) == TEXTS
    assert np.array_equal(masks[TEXTS[1]], together[:, 1] > 0)


def test_memory_state_stays_flat(model, frames):
    segmenter = VideoSegmenter(model)
    segmenter.start(TEXTS[:1])
    sizes = []
    for frame in itertools.islice(itertools.cycle(frames), 6):
        segmenter.step(frame)
        sizes.append(sum(item.numel() for entry in segmenter.state.memory for item in entry))
    assert len(segmenter.state.memory) == model.memory_size
    assert sizes[-1] == sizes[model.memory_size - 1]  # nothing grows once the FIFO is full


def test_fit_size_keeps_aspect_and_pads_to_32():
    assert fit_size(480, 854, (480, 864)) == ((480, 854), (480, 864))  # DAVIS frame in the paper box
    assert fit_size(480, 854, (96, 160)) == ((90, 160), (96, 160))
    assert fit_size(100, 100, (384, 640)) == ((384, 384), (384, 384))  # small frames are scaled up
    assert fit_size(1080, 1920, (384, 640)) == ((360, 640), (384, 640))


def test_output_at_the_frames_own_resolution(model, frames, tmp_path):
    video = np.ascontiguousarray(frames[:, :90, :150])  # not the model's size: resized, padded, resized back
    segmenter = VideoSegmenter(model)
    masks = segmenter.segment(list(video), TEXTS)
    assert all(m.shape == (4, 90, 150) for m in masks.values())

    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, fps=5) as writer:
        for frame in video:
            writer.write(frame)
    from_file = segmenter.segment(path, TEXTS[:1])[TEXTS[0]]
    assert from_file.shape == (4, 90, 150)
    assert (from_file == masks[TEXTS[0]]).mean() > 0.85  # lossy coding, same content


def test_label_map_highest_score_wins():
    logits = np.array([[[2.0, -1.0, 0.5]], [[1.0, 3.0, -0.5]], [[-4.0, -2.0, 0.7]]])  # (K=3, 1, 3)
    assert label_map(logits).tolist() == [[1, 2, 3]]
    assert label_map(logits, threshold=1.5).tolist() == [[1, 2, 0]]
    assert label_map(-np.ones((2, 2, 2))).tolist() == [[0, 0], [0, 0]]


def test_bad_inputs(model, frames):
    segmenter = VideoSegmenter(model)
    with pytest.raises(InputError, match="call start"):
        segmenter.step(frames[0])
    for texts, message in [([], "non-empty list"), (["a", "a"], "twice"), (["a", "  "], "sentence 2 is empty"),
                           ("a cat", "non-empty list")]:
        with pytest.raises(InputError, match=message):
            segmenter.start(texts)
    segmenter.start(TEXTS[:1])
    with pytest.raises(InputError, match="uint8"):
        segmenter.step(frames[0].astype(np.float32))
    segmenter.step(frames[0])
    with pytest.raises(InputError, match="differs"):
        segmenter.step(frames[0, :64])
    with pytest.raises(InputError, match=r"\(T, H, W, 3\)"):
        segmenter.segment(frames[0], TEXTS[:1])
    with pytest.raises(InputError, match="no frames"):
        segmenter.segment([], TEXTS[:1])
    with pytest.raises(ConfigError, match="not one of"):
        VideoSegmenter(model, device="gpu")


def test_real_davis_clip(model, real_data):
    folder = real_data / "DAVIS" / "JPEGImages" / "480p" / "blackswan"
    if not folder.is_dir():
        pytest.skip("blackswan frames are absent")
    frames = list(itertools.islice(open_video(folder), 3))
    masks = VideoSegmenter(model).segment(frames, ["a black feathered swan"])["a black feathered swan"]
    assert masks.shape == (3, 480, 854) and masks.dtype == bool
