"""Training clips: a pure function of (seed, index), frames in order within the window, masks and void aligned
with the frames, datasets mixed by weight, errors for missing data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yofo.config import load_config
from yofo.data.clips import ClipDataset, loader_workers
from yofo.data.records import read_frame, read_mask
from yofo.data.ytvos import load_ytvos
from yofo.data.synthetic import synthesize
from yofo.errors import ConfigError, DatasetError
from yofo.model.image_encoder import IMAGENET_MEAN
from yofo.predictor import fit_size

NO_AUGMENT = [
    "data.augment.color_jitter=0", "data.augment.blur_p=0", "data.augment.erase_p=0", "data.augment.hflip_p=0",
]


def _config(*overrides: str):
    return load_config("tiny", ["model.input_size=[64,96]", *overrides])


def test_items_have_the_documented_shapes_and_ranges(synth_root: Path) -> None:
    item = ClipDataset(_config(f"data.root={synth_root}"), seed=0)[0]
    assert item["frames"].shape == (4, 3, 64, 96) and item["frames"].dtype == torch.float32
    assert item["masks"].shape == item["valid"].shape == (4, 1, 64, 96)
    assert 0 <= item["frames"].min() and item["frames"].max() <= 1
    assert set(item["masks"].unique().tolist()) <= {0.0, 1.0} and item["masks"].any()
    assert item["source"].startswith("ytvos:train") and isinstance(item["text"], str) and item["text"]


def test_item_is_a_pure_function_of_seed_and_index(synth_root: Path) -> None:
    cfg = _config(f"data.root={synth_root}", "data.augment.hflip_p=0.5")
    first = ClipDataset(cfg, seed=1)
    for i in (3, 0, 1):  # visiting other indices first changes nothing
        first[i]
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a = first[7]
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_num_threads() == threads
    b = ClipDataset(cfg, seed=1)[7]
    assert all(torch.equal(a[k], b[k]) for k in ("frames", "masks", "valid")) and a["text"] == b["text"]
    assert a["source"] == b["source"]
    c = ClipDataset(cfg, seed=2)[7]
    d = first[8]
    assert not torch.equal(a["frames"], c["frames"]) and not torch.equal(a["frames"], d["frames"])


def test_frames_are_in_order_within_the_window_and_masks_match(synth_root: Path) -> None:
    cfg = _config(f"data.root={synth_root}", "data.max_gap=3", *NO_AUGMENT)
    dataset = ClipDataset(cfg, seed=0)
    videos = {v.name: v for v in load_ytvos(synth_root, "train")}
    for index in range(6):
        item = dataset[index]
        _, name, exp_id = item["source"].split(":")
        video = videos[name]
        expression = next(e for e in video.expressions if e.exp_id == exp_id)
        assert item["text"] == expression.text
        originals = [torch.tensor(read_frame(p)).permute(2, 0, 1).float() / 255 for p in video.frame_paths]
        picked = [next(t for t, frame in enumerate(originals) if torch.allclose(frame, f, atol=1e-6)) for f in item["frames"]]
        assert picked == sorted(picked) and picked[-1] - picked[0] <= 3
        for k, t in enumerate(picked):
            target = read_mask(video.mask_paths[t]) == expression.obj_id
            assert torch.equal(item["masks"][k, 0], torch.from_numpy(target.astype(np.float32)))


def test_frames_of_another_aspect_are_padded_as_at_inference(tmp_path: Path) -> None:
    root = tmp_path / "synth43"
    synthesize(root, train=2, valid=1, seed=0, size=(48, 64), frames=6)  # 4:3 frames, 3:2 input: 64×85 + 11
    dataset = ClipDataset(_config(f"data.root={root}", *NO_AUGMENT), seed=0)
    videos = {v.name: v for v in load_ytvos(root, "train")}
    for index in range(4):
        item = dataset[index]
        assert item["frames"].shape[-2:] == (64, 96)
        assert fit_size(48, 64, (64, 96))[0] == (64, 85)  # what VideoSegmenter resizes such a frame to
        assert (item["valid"][..., 85:] == 0).all() and (item["valid"][..., :85] == 1).all()
        assert not item["masks"][..., 85:].any() and item["masks"][..., :85].any()
        pad = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(4, 3, 64, 11)
        assert torch.allclose(item["frames"][..., 85:], pad, atol=0.5 / 255)  # zero once normalised
        frames = videos[item["source"].split(":")[1]].frame_paths
        content = [torch.tensor(read_frame(p, (64, 96))).permute(2, 0, 1) / 255 for p in frames]
        assert all(any(torch.equal(f[..., :85], c) for c in content) for f in item["frames"])


def test_void_pixels_are_invalid_and_not_target(davis_root: Path) -> None:
    cfg = _config(
        f"data.datasets=[{{format: davis, root: '{davis_root}', split: val}}]", "model.input_size=[32,32]", *NO_AUGMENT
    )
    dataset = ClipDataset(cfg, seed=0)
    items = [dataset[i] for i in range(8)]
    car = [item for item in items if item["source"].startswith("davis:classic-car")]
    assert car, "no clip of the video with void pixels"
    for item in car:
        assert (item["valid"][:, 0, 8:10] == 0).all() and (item["valid"][:, 0, :8] == 1).all()
        assert (item["masks"][:, 0, 8:10] == 0).all()


def test_datasets_are_mixed_by_weight_and_image_clips_are_warped(synth_root: Path, refcoco_root: Path) -> None:
    cfg = _config(
        f"data.datasets=[{{format: ytvos, root: '{synth_root}', weight: 3}}, {{format: refcoco, root: '{refcoco_root}', weight: 1}}]"
    )
    dataset = ClipDataset(cfg, seed=0)
    sources = [dataset[i]["source"].split(":")[0] for i in range(300)]
    assert 0.15 < sources.count("refcoco") / len(sources) < 0.35
    image_item = dataset[sources.index("refcoco")]
    assert image_item["text"] in {"left box", "the wide box", "right thing"}
    assert not torch.allclose(image_item["frames"][0], image_item["frames"][1])  # one image, four affine copies
    assert image_item["masks"].any()


def test_loader_batches_with_the_default_collate(synth_root: Path) -> None:
    dataset = ClipDataset(_config(f"data.root={synth_root}"), seed=0, length=4)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["frames"].shape == (2, 4, 3, 64, 96) and len(batch["text"]) == 2
    assert len(dataset) == 4


def test_missing_data_raises_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        ClipDataset(_config(f"data.root={tmp_path / 'missing'}"), seed=0)
    with pytest.raises(DatasetError, match="no training data"):
        ClipDataset(_config(), seed=0)
    with pytest.raises(DatasetError, match=r"data.datasets.0.root is not set"):
        ClipDataset(load_config("paper"), seed=0)
    with pytest.raises(DatasetError, match="format 'kinetics'"):
        ClipDataset(_config(f"data.datasets=[{{format: kinetics, root: '{tmp_path}'}}]"), seed=0)


def test_valid_split_without_labels_cannot_train(ytvos_root: Path) -> None:
    cfg = _config(f"data.datasets=[{{format: ytvos, root: '{ytvos_root}', split: valid}}]")
    with pytest.raises(DatasetError, match="no expression with an object id and masks"):
        ClipDataset(cfg, seed=0)


def test_corrupt_training_frame_is_reported_with_its_path(ytvos_root: Path) -> None:
    for frame in (ytvos_root / "train" / "JPEGImages").rglob("*.jpg"):
        frame.write_bytes(frame.read_bytes()[:100])  # truncated
    dataset = ClipDataset(_config(f"data.root={ytvos_root}", "model.input_size=[32,32]"), seed=0)
    with pytest.raises(DatasetError, match=r"train/JPEGImages/(a1|b2)/\d{5}\.jpg: cannot read image"):
        dataset[0]


def test_paired_items_share_the_clip_and_refer_to_different_objects(synth_root: Path) -> None:
    cfg = _config(f"data.root={synth_root}", "data.pair_expressions=true", "data.augment.hflip_p=0.5")
    dataset = ClipDataset(cfg, seed=0)
    videos = {v.name: v for v in load_ytvos(synth_root, "train")}
    for group in range(4):
        a, b = dataset[2 * group], dataset[2 * group + 1]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["valid"], b["valid"])
        (_, video_a, exp_a), (_, video_b, exp_b) = a["source"].split(":"), b["source"].split(":")
        assert video_a == video_b
        objects = {e.exp_id: e.obj_id for e in videos[video_a].expressions}
        assert objects[exp_a] != objects[exp_b]  # every synthetic training video has two or more objects
        assert not torch.equal(a["masks"], b["masks"]) and not (a["masks"].bool() & b["masks"].bool()).any()


def test_loader_workers_auto_follows_the_cpus(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert loader_workers("auto") == 8 and loader_workers("auto", local_processes=4) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_workers("auto") == 0 and loader_workers(3) == 3
    for bad in ("four", -1, True):
        with pytest.raises(ConfigError, match="data.num_workers: .* must be an integer >= 0 or 'auto'"):
            loader_workers(bad)
    assert load_config("paper").data.num_workers == "auto" and load_config("tiny").data.num_workers == 0


@pytest.mark.parametrize("window", [2, 3])
def test_motion_history_brings_the_frames_before_each_frame(synth_root: Path, window: int) -> None:
    """``data.motion_history``: each frame's W − 1 predecessors in the video (the first frame repeated before
    the start), augmented as that frame; the draw itself (frames, masks, sentence) is unchanged."""
    base = [f"data.root={synth_root}", "data.max_gap=3", f"model.fm.motion.window={window}"]
    videos = {v.name: v for v in load_ytvos(synth_root, "train")}
    for augment in (NO_AUGMENT, [*NO_AUGMENT[:3], "data.augment.hflip_p=1"]):
        with_history = ClipDataset(_config(*base, *augment, "data.motion_history=true"), seed=0)
        without = ClipDataset(_config(*base, *augment), seed=0)
        for index in range(4):
            item, plain = with_history[index], without[index]
            assert "previous" not in plain and item["previous"].shape == (4, window - 1, 3, 64, 96)
            assert all(torch.equal(item[k], plain[k]) for k in ("frames", "masks", "valid"))
            assert item["text"] == plain["text"] and item["source"] == plain["source"]
            video = videos[item["source"].split(":")[1]]
            originals = [torch.tensor(read_frame(p)).permute(2, 0, 1).float() / 255 for p in video.frame_paths]
            if augment is not NO_AUGMENT:
                originals = [frame.flip(-1) for frame in originals]
            for frame, past in zip(item["frames"], item["previous"]):
                t = next(t for t, original in enumerate(originals) if torch.allclose(original, frame, atol=1e-6))
                expected = torch.stack([originals[max(0, t - k)] for k in range(window - 1, 0, -1)])
                torch.testing.assert_close(past, expected, rtol=0, atol=1e-6)


def test_motion_history_is_a_still_picture_for_images_and_off_without_motion(
    synth_root: Path, refcoco_root: Path
) -> None:
    cfg = _config(f"data.datasets=[{{format: refcoco, root: '{refcoco_root}', weight: 1}}]",
                  "model.fm.motion.window=2", "data.motion_history=true")
    item = ClipDataset(cfg, seed=0)[0]
    assert torch.equal(item["previous"][:, 0], item["frames"])  # an image does not move
    motion_off = ClipDataset(_config(f"data.root={synth_root}", "data.motion_history=true"), seed=0)[0]
    assert "previous" not in motion_off  # the paper's model (Table 3 rows) gets the same items with the switch on
    batch = next(iter(DataLoader(ClipDataset(cfg, seed=0, length=2), batch_size=2)))
    assert batch["previous"].shape == (2, 4, 1, 3, 64, 96)
