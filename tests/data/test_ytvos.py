"""Ref-YouTube-VOS reader and the shared file readers, on fixtures in the official layout and on the real
published valid expression file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from yofo.data.records import Expression, read_frame, read_mask
from yofo.data.ytvos import load_ytvos
from yofo.errors import DatasetError


def test_train_split_loads_videos_expressions_and_masks(ytvos_root: Path) -> None:
    videos = load_ytvos(ytvos_root, "train")
    assert [v.name for v in videos] == ["a1", "b2"]
    a1 = videos[0]
    assert a1.frame_names == ["00000", "00005", "00010"]
    assert a1.frame_paths[1] == ytvos_root / "train" / "JPEGImages" / "a1" / "00005.jpg"
    assert a1.expressions == [Expression("0", "a red car", 1), Expression("1", "the dog on the left", 2)]
    ids = read_mask(a1.mask_paths[1])
    assert ids.dtype == np.uint8 and ids.shape == (32, 32)
    assert set(np.unique(ids)) == {0, 1, 2}
    assert (ids[2:10, 2:10] == 1).all() and (ids[12:20, 16:30] == 2).all()
    assert read_frame(a1.frame_paths[0]).shape == (32, 32, 3)


def test_valid_split_has_no_labels_and_test_videos_are_removed(ytvos_root: Path) -> None:
    videos = load_ytvos(ytvos_root, "valid")
    assert [v.name for v in videos] == ["v1", "v2", "v3"]
    assert all(path is None for v in videos for path in v.mask_paths)
    assert all(e.obj_id is None for v in videos for e in v.expressions)
    assert videos[0].frame_names == ["00000", "00005"]  # listed from JPEGImages: the file has no "frames"
    kept = load_ytvos(ytvos_root, "valid", test_meta=ytvos_root.parent / "test_meta.json")
    assert [v.name for v in kept] == ["v1", "v2"]


def test_missing_frames_in_a_listed_frame_still_loads_and_mask_is_none(ytvos_root: Path) -> None:
    (ytvos_root / "train" / "Annotations" / "a1" / "00010.png").unlink()
    video = load_ytvos(ytvos_root, "train")[0]
    assert video.mask_paths[2] is None and video.mask_paths[0] is not None


def _edit_train_meta(root: Path, edit) -> None:
    path = root / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["videos"]["a1"]["expressions"]["1"].pop("obj_id"), "video 'a1' expression '1' has no obj_id"),
        (lambda d: d["videos"]["a1"]["expressions"]["1"].pop("exp"), "missing field 'exp'"),
        (lambda d: d["videos"]["a1"]["expressions"]["1"].update(obj_id="two"), "obj_id 'two' is not an integer"),
        (lambda d: d["videos"]["a1"].update(frames="00000"), "field 'frames' should be list"),
        (lambda d: d.pop("videos"), "missing field 'videos'"),
    ],
)
def test_malformed_expression_file_raises_dataset_error_naming_file_and_field(ytvos_root: Path, edit, message: str) -> None:
    _edit_train_meta(ytvos_root, edit)
    with pytest.raises(DatasetError, match="meta_expressions.json") as info:
        load_ytvos(ytvos_root, "train")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files_raise_dataset_error(ytvos_root: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_ytvos(ytvos_root / "nope")
    with pytest.raises(DatasetError, match="file not found"):
        load_ytvos(ytvos_root, "test")
    (ytvos_root / "meta_expressions" / "train" / "meta_expressions.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_ytvos(ytvos_root, "train")


def test_corrupt_or_missing_image_is_reported_with_its_path(ytvos_root: Path) -> None:
    frame = ytvos_root / "train" / "JPEGImages" / "a1" / "00000.jpg"
    frame.write_bytes(frame.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(DatasetError, match=str(frame)):
        read_frame(frame)
    with pytest.raises(DatasetError, match="not found"):
        read_mask(ytvos_root / "missing.png")
    rgb = ytvos_root / "rgb.png"
    shutil.copy(ytvos_root / "train" / "JPEGImages" / "a1" / "00005.jpg", ytvos_root / "rgb.jpg")
    from PIL import Image

    Image.open(ytvos_root / "rgb.jpg").save(rgb)
    with pytest.raises(DatasetError, match="expected a palette or grayscale PNG"):
        read_mask(rgb)


def test_resized_reads_keep_labels_and_aspect(ytvos_root: Path) -> None:
    video = load_ytvos(ytvos_root, "train")[0]  # 32×32 frames
    assert read_frame(video.frame_paths[0], (12, 20)).shape == (12, 12, 3)
    ids = read_mask(video.mask_paths[1], (48, 64))
    assert ids.shape == (48, 48) and set(np.unique(ids)) == {0, 1, 2}  # nearest: no blended ids


def test_real_published_valid_file_loads_and_splits_into_valid_and_test(real_data: Path, tmp_path: Path) -> None:
    source = real_data / "ref-ytvos" / "meta_expressions_valid.json"
    root = tmp_path / "ytvos"
    (root / "meta_expressions" / "valid").mkdir(parents=True)
    shutil.copy(source, root / "meta_expressions" / "valid" / "meta_expressions.json")
    names = list(json.loads(source.read_text())["videos"])
    for name in names:  # the file lists no frames: the reader takes them from JPEGImages
        (root / "valid" / "JPEGImages" / name).mkdir(parents=True)
        (root / "valid" / "JPEGImages" / name / "00000.jpg").touch()
    videos = load_ytvos(root, "valid")
    assert len(videos) == 507
    assert sum(len(v.expressions) for v in videos) == 2096
    assert all(e.obj_id is None and e.text for v in videos for e in v.expressions)
    first = videos[0]
    assert first.name == "0062f687f1" and first.expressions[0].text == "a dog is with its puppies on the cloth"
    test_meta = tmp_path / "test.json"
    test_meta.write_text(json.dumps({"videos": {name: {} for name in names[202:]}}))
    assert len(load_ytvos(root, "valid", test_meta=test_meta)) == 202
