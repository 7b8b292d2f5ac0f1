"""Ref-DAVIS17 reader on a fixture in the official layout (latin-1 annotator 2, typo'd names, void pixels) and on
the real DAVIS frames, masks and Ref-DAVIS expressions in ../shared/data/real."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from yofo.cli import main
from yofo.config import load_config
from yofo.data.clips import ClipDataset
from yofo.data.davis import load_davis, read_expression_file
from yofo.data.records import read_mask
from yofo.engine.evaluate import evaluate
from yofo.errors import DatasetError


def test_val_split_first_frame_annotator_1(davis_root: Path) -> None:
    videos = load_davis(davis_root, "val")
    assert [v.name for v in videos] == ["classic-car", "dogs-scale"]  # typos 'clasic-car', 'dog-scale' fixed
    car = videos[0]
    assert car.frame_names == ["00000", "00001", "00002"]
    assert [(e.exp_id, e.obj_id, e.text) for e in car.expressions] == [("0", 1, "a black car"), ("4", 2, "the white car")]
    assert all(e.kind is None for e in car.expressions)
    ids = read_mask(car.mask_paths[0])
    assert set(np.unique(ids)) == {0, 1, 2, 255}  # void stays void
    assert (ids[8:10] == 255).all()


def test_annotator_2_is_latin1_and_expression_ids_follow_the_four_result_sets(davis_root: Path) -> None:
    car = load_davis(davis_root, "val", annotators=(1, 2), expression_type="all")[0]
    by_id = {e.exp_id: e for e in car.expressions}
    # exp_id = 4·(obj_id − 1) + {annot1-first 0, annot1-full 1, annot2-first 2, annot2-full 3}
    assert by_id["2"].text == "la voiture café"
    assert by_id["1"].text == "a black car driving" and by_id["3"].text == "car"
    assert by_id["5"].text == "a parked white car" and by_id["6"].text == "white car" and by_id["7"].text == "second car"
    assert sorted(int(i) for i in by_id) == list(range(8))
    full = load_davis(davis_root, "val", annotators=(2,), expression_type="full_video")[0]
    assert [e.exp_id for e in full.expressions] == ["3", "7"]


def test_train_split_and_unsupervised_ground_truth(davis_root: Path) -> None:
    (bear,) = load_davis(davis_root, "train", gt="unsupervised")
    assert bear.expressions[0].text == "a brown bear"
    ids = read_mask(bear.mask_paths[0])
    assert set(np.unique(ids)) == {0, 1} and (ids[10:20, 10:20] == 1).all()


def test_missing_mask_file_gives_none(davis_root: Path) -> None:
    (davis_root / "Annotations" / "480p" / "dogs-scale" / "00002.png").unlink()
    dogs = load_davis(davis_root, "val")[1]
    assert dogs.mask_paths[2] is None and dogs.mask_paths[1] is not None


@pytest.mark.parametrize(
    "line, message",
    [('clasic-car "no id"', "expected `<video> <obj_id>"), ('clasic-car 1 ""', "expected"), ("clasic-car 0 \"x\"", "expected")],
)
def test_malformed_expression_line_names_file_and_line(davis_root: Path, line: str, message: str) -> None:
    path = davis_root / "davis_text_annotations" / "Davis17_annot1.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        load_davis(davis_root, "val")
    assert "Davis17_annot1.txt:6" in str(info.value)


def test_missing_files_and_bad_options_raise_dataset_error(davis_root: Path) -> None:
    with pytest.raises(DatasetError, match="split file not found"):
        load_davis(davis_root, "test-dev")
    with pytest.raises(DatasetError, match="expression_type"):
        load_davis(davis_root, expression_type="last_frame")
    with pytest.raises(DatasetError, match="annotators"):
        load_davis(davis_root, annotators=(3,))
    (davis_root / "davis_text_annotations" / "Davis17_annot2.txt").unlink()
    with pytest.raises(DatasetError, match="Davis17_annot2.txt: expression file not found"):
        load_davis(davis_root, annotators=(2,))
    (davis_root / "davis_text_annotations" / "Davis17_annot1.txt").write_bytes('bear 1 "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not utf-8"):
        read_expression_file(davis_root / "davis_text_annotations" / "Davis17_annot1.txt", "utf-8")


def _real_davis_root(real_data: Path, tmp_path: Path) -> tuple[Path, list[str], dict[tuple[str, int], str]]:
    """A DAVIS root linking the real frames and masks, with Ref-DAVIS expressions from the RefVOS CSV written
    as Davis17_annot1.txt (UTF-8) and Davis17_annot2.txt (latin-1)."""
    davis = real_data / "DAVIS"
    names = sorted(os.listdir(davis / "JPEGImages" / "480p"))
    root = tmp_path / "DAVIS"
    for folder in ("JPEGImages", "Annotations"):
        (root / folder).mkdir(parents=True)
        (root / folder / "480p").symlink_to(davis / folder / "480p")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    with open(real_data / "ref-davis" / "DAVIS17_RE_categorization.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter=";") if row["video_id"] in names]
    expressions = {(row["video_id"], int(row["instance_id"])): row["ref_exp"] for row in rows}
    lines = "".join(f'{video} {obj} "{text}"\n' for (video, obj), text in expressions.items())
    (root / "davis_text_annotations").mkdir()
    (root / "davis_text_annotations" / "Davis17_annot1.txt").write_text(lines, encoding="utf-8")
    (root / "davis_text_annotations" / "Davis17_annot2.txt").write_bytes(lines.encode("latin-1"))
    return root, names, expressions


def test_real_davis_frames_masks_and_expressions_load(real_data: Path, tmp_path: Path) -> None:
    root, names, expressions = _real_davis_root(real_data, tmp_path)
    videos = load_davis(root, "val", annotators=(1, 2))
    assert [v.name for v in videos] == names
    lengths = {"blackswan": 50, "camel": 90, "dog": 60, "car-shadow": 40, "breakdance": 84, "drift-straight": 50}
    assert {v.name: len(v.frame_paths) for v in videos} == {n: lengths[n] for n in names}
    assert all(path is not None for v in videos for path in v.mask_paths)
    swan = videos[names.index("blackswan")]
    assert [(e.obj_id, e.text) for e in swan.expressions] == [(1, "a black feathered swan")] * 2
    assert {(v.name, e.obj_id): e.text for v in videos for e in v.expressions} == expressions
    ids = read_mask(swan.mask_paths[0])
    assert ids.shape == (480, 854) and set(np.unique(ids)) == {0, 1}


def test_real_davis_void_pixels_are_kept(real_data: Path) -> None:
    ids = read_mask(real_data / "davis-samples" / "DAVIS" / "Annotations" / "480p" / "tennis" / "00000.png")
    assert set(np.unique(ids)) == {0, 1, 2, 255}


def test_gap_in_frames_and_orphan_mask_are_problems_that_training_and_eval_refuse(davis_root: Path, tmp_path: Path,
                                                                                    capsys) -> None:
    frames = davis_root / "JPEGImages" / "480p" / "classic-car"
    (frames / "00001.jpg").unlink()
    car = load_davis(davis_root, "val")[0]
    assert car.frame_names == ["00000", "00002"]
    assert car.problems == [
        f"{frames / '00001'}.jpg: frame missing (the numbering jumps from 00000 to 00002)",
        f"{davis_root / 'Annotations' / '480p' / 'classic-car' / '00001'}.png: mask without its frame {frames / '00001'}.jpg",
    ]
    assert load_davis(davis_root, "val")[1].problems == []
    assert main(["data", "stats", str(davis_root), "--format", "davis", "--split", "val", "--strict"]) == 1
    assert f"problem: {frames / '00001'}.jpg: frame missing" in capsys.readouterr().out
    cfg = load_config("tiny", [f"data.datasets=[{{format: davis, root: '{davis_root}', split: val}}]"])
    with pytest.raises(DatasetError, match=r"^video 'classic-car': .*00001.jpg: frame missing .*\(and 1 more; "):
        ClipDataset(cfg, seed=0)
    with pytest.raises(DatasetError, match="video 'classic-car': .*00001.jpg: frame missing"):
        evaluate(davis_root, "davis", tmp_path / "eval", checkpoint=tmp_path / "never-read.safetensors")
    assert not (tmp_path / "eval").exists()


def test_real_davis_with_a_deleted_frame_fails_strict_stats(real_data: Path, tmp_path: Path, capsys) -> None:
    """The issue's case: JPEGImages/480p/dog/00010.jpg deleted from a real DAVIS folder."""
    root = tmp_path / "DAVIS"
    for folder in ("JPEGImages", "Annotations"):
        for path in sorted((real_data / "DAVIS" / folder / "480p" / "dog").iterdir()):
            if path.name != "00010.jpg":
                (root / folder / "480p" / "dog").mkdir(parents=True, exist_ok=True)
                (root / folder / "480p" / "dog" / path.name).symlink_to(path)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("dog\n")
    (root / "davis_text_annotations").mkdir()
    for annotator in (1, 2):
        (root / "davis_text_annotations" / f"Davis17_annot{annotator}.txt").write_text('dog 1 "a black dog"\n')
    argv = ["data", "stats", str(root), "--format", "davis", "--split", "val", "--annotators", "1",
            "--expressions", "first_frame", "--strict"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"problem: {root / 'JPEGImages' / '480p' / 'dog' / '00010'}.jpg: frame missing" in out
    assert f"problem: {root / 'Annotations' / '480p' / 'dog' / '00010'}.png: mask without its frame" in out
