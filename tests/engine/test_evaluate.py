"""``yofo eval``: synthetic / ytvos / Ref-DAVIS17 scoring, the shuffle control, the submission zip, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yofo.cli import main
from yofo.config import load_config
from yofo.data.records import Expression, Video, read_mask
from yofo.data.ytvos import load_ytvos
from yofo.engine.checkpoint import save_model
from yofo.engine.evaluate import (
    ObjectScore,
    davis_object_scores,
    grounding_check,
    motion_blind_reference,
    per_frame,
    per_named,
    shuffle_objects,
    zip_submission,
)
from yofo.errors import DatasetError, InputError
from yofo.model.yofo import build_model
from yofo.video_io import write_palette_png

# A model narrower than `tiny`, at 64×64: one frame of one video takes a few milliseconds.
MICRO_MODEL = [
    "model.image_encoder.width=8", "model.fm.dim=16", "model.fm.key_dim=8", "model.meta_transfer.feature_dim=16",
    "model.decoder.width=8", "model.target_dim=4", "model.input_size=[64,64]",
]

# OSVOS on DAVIS-2017 val, semi-supervised task: J-Mean and F-Mean of object 1, from the per-frame values the
# benchmark site publishes (davisvideochallenge.github.io, json_data/raw_eval/2017/osvos_davis.json; the
# per-frame lists are in tests/test_metrics.py).
PUBLISHED_OSVOS_MEANS = {"blackswan": (0.94301, 0.97410), "car-shadow": (0.92840, 0.91741)}


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
    save_model(build_model(load_config("tiny", MICRO_MODEL).model).eval(), path)
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ------------------------------------------------------------------------------------------- synthetic
def test_eval_synthetic_end_to_end(checkpoint, synth_root, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(checkpoint), "--data", str(synth_root), "--format", "synthetic",
            "--control", "shuffle", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "J&F" in printed
    result = _metrics(out)
    videos = load_ytvos(synth_root, "valid")
    grounding = result["grounding"]  # every synthetic video has >= 2 objects: every sentence is checked
    assert grounding["sentences"] == result["objects"] and f"{grounding['grounded']} of {grounding['sentences']}" in printed
    expressions = [(v, e) for v in videos for e in v.expressions]

    assert 0.0 <= result["J&F"] <= 1.0
    assert result["J&F"] == pytest.approx((result["J"]["mean"] + result["F"]["mean"]) / 2)
    assert set(result["J"]) == set(result["F"]) == {"mean", "recall", "decay"}
    assert result["objects"] == len(expressions) == len(result["per_object"])
    kinds = {e.kind for _, e in expressions}
    assert set(result["per_kind"]) == kinds
    assert set(result["per_cue"]) == {cue for kind in kinds for cue in kind.split("+")}
    assert sum(k["objects"] for k in result["per_kind"].values()) == len(expressions)
    assert result["control"]["method"] == "shuffle" and result["control"]["objects"] == len(expressions)
    assert result["speed"]["videos"] == 3 and result["speed"]["frames"] == 18
    assert result["checkpoint_sha256"] and len(result["checkpoint_sha256"]) == 64
    rows = (out / "per_object.csv").read_text().splitlines()
    assert rows[0].startswith("name,video,obj_id,exp_id") and len(rows) == len(expressions) + 1

    # one palette PNG per expression and frame, at the frame's size, holding the mask that was scored:
    # scoring the written PNGs again gives the same numbers
    pngs = sorted((out / "predictions").rglob("*.png"))
    assert len(pngs) == sum(len(v.frame_names) for v, _ in expressions)
    with Image.open(pngs[0]) as image:
        assert image.mode == "P" and image.size == (64, 64)
    again = tmp_path / "again"
    assert main(["eval", "--predictions", str(out / "predictions"), "--data", str(synth_root), "--format", "synthetic",
                 "--control", "shuffle", "--out", str(again), "--no-progress"]) == 0
    rescored = _metrics(again)
    for key in ("J&F", "J", "F", "per_kind", "per_object"):
        assert rescored[key] == result[key]
    assert rescored["control"]["J&F"] == result["control"]["J&F"]


def test_oracle_scores_one_and_shuffle_control_is_low(synth_root, tmp_path):
    """Ground truth given as predictions: J&F is exactly 1, and the control scores other objects' masks."""
    predictions = tmp_path / "oracle"
    for video in load_ytvos(synth_root, "valid"):
        for e in video.expressions:
            for name, mask_path in zip(video.frame_names, video.mask_paths):
                write_palette_png(predictions / video.name / e.exp_id / f"{name}.png", read_mask(mask_path) == e.obj_id)
    from yofo.engine.evaluate import evaluate

    result = evaluate(synth_root, "synthetic", tmp_path / "out", predictions=predictions, control_seed=0,
                      progress=False)
    assert result["J&F"] == 1.0 and result["J"]["recall"] == 1.0 and result["J"]["decay"] == 0.0
    assert all(row["J-Mean"] == 1.0 for row in result["per_object"])
    assert result["control"]["J&F"] < 0.3  # distinct objects barely overlap
    assert result["control"]["videos_not_shuffled"] == 0
    assert result["motion_blind"]["J&F"] == 1.0 and result["motion_blind"]["bound"] < 1.0
    assert result["grounding"]["share"] == 1.0 and result["grounding"]["on_other"] == 0  # perfect masks: all grounded
    assert not (tmp_path / "out" / "predictions").exists()  # nothing to write when predictions are given


def test_motion_blind_reference_guesses_among_the_candidates():
    """A motion-only sentence among 3 objects: chance 1/3; motion with another cue: 1/2; others count as 1."""

    def score(video: str, obj_id: int, kind: str, value: float) -> ObjectScore:
        return ObjectScore(f"{video}_{obj_id}", video, obj_id, np.array([value]), np.array([value]), kind=kind)

    scores = [score("a", 1, "motion", 0.2), score("a", 2, "appearance", 0.9), score("a", 3, "position", 0.8),
              score("b", 1, "appearance+motion", 0.6), score("b", 2, "appearance", 0.7)]
    blind = motion_blind_reference(scores)
    assert blind["expressions"] == 2 and blind["others"] == 3
    assert blind["J&F"] == pytest.approx(0.4)
    assert blind["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert blind["bound"] == pytest.approx((1 / 3 + 1 / 2 + 3) / 5)
    assert motion_blind_reference([s for s in scores if "motion" not in s.kind]) is None


def test_grounding_check_needs_own_object_and_a_margin_over_every_other():
    def score(video: str, kind: str, own: float, others: dict[int, float]) -> ObjectScore:
        j_others = {o: np.array([j, j]) for o, j in others.items()}
        return ObjectScore(f"{video}_1", video, 1, np.array([own, own]), np.array([own, own]), kind=kind,
                           J_others=j_others)

    scores = [score("a", "motion", 0.9, {2: 0.1, 3: 0.59}),  # grounded (0.9 - 0.59 >= 0.3)
              score("a", "motion", 0.9, {2: 0.1, 3: 0.65}),  # not: too close to object 3
              score("b", "appearance", 0.45, {2: 0.0}),  # not: below 0.5 on its own object
              score("b", "appearance", 0.2, {2: 0.8}),  # on another object
              score("c", "position", 1.0, {})]  # a single-object video: not checked
    g = grounding_check(scores)
    assert (g["sentences"], g["grounded"], g["on_other"]) == (4, 1, 1)
    assert g["share"] == 0.25 and g["per_kind"]["motion"] == {"sentences": 2, "grounded": 1, "share": 0.5}
    assert grounding_check(scores[-1:]) is None


def test_per_named_and_per_frame_split_single_cue_sentences_and_frames():
    def score(kind: str, text: str, j: list[float]) -> ObjectScore:
        return ObjectScore("v_1", "v", 1, np.array(j), np.array(j), kind=kind, text=text)

    scores = [score("appearance", "the red shape", [0.2, 0.4, 0.6, 0.8, 1.0]),
              score("appearance", "the little red thing", [1.0, 1.0, 1.0]),
              score("motion", "the object going up", [0.0, 0.5, 0.5, 0.5, 0.7]),
              score("appearance+motion", "the square that stays still", [1.0, 1.0, 1.0, 1.0]),  # not a single cue
              score("position", "the leftmost object", [0.5]),
              score("appearance+position", "the blue square on the left", [0.9])]
    named = per_named(scores)
    assert list(named) == ["appearance: color", "appearance: color + size", "motion: up", "position: left"]
    assert named["motion: up"]["J"]["mean"] == pytest.approx(np.mean([0.0, 0.5, 0.5, 0.5, 0.7]))
    frames = per_frame(scores, frames=4)
    assert frames["frames"] == ["0", "1", "2", "≥3"]
    assert frames["motion"] == pytest.approx([0.5, 0.75, 0.75, np.mean([np.mean([0.5, 0.7]), 1.0])])
    assert frames["appearance"][3] == pytest.approx(np.mean([0.9, 1.0]))  # only the expressions with 4+ frames
    assert frames["position"] == pytest.approx([0.7, None, None, None])


def test_shuffle_is_a_deterministic_derangement(synth_root):
    for video in load_ytvos(synth_root, "valid"):
        mapping = shuffle_objects(video, seed=0)
        objects = {e.obj_id for e in video.expressions}
        assert set(mapping) == set(mapping.values()) == objects
        assert all(source != target for source, target in mapping.items())  # >= 2 objects: nobody keeps its own
        assert mapping == shuffle_objects(video, seed=0)
    three = Video("v", [], [], [], [Expression(str(k), f"object {k}", k) for k in (1, 2, 3)])
    assert {tuple(sorted(shuffle_objects(three, seed).items())) for seed in range(10)} == {
        ((1, 2), (2, 3), (3, 1)), ((1, 3), (2, 1), (3, 2))}  # both 3-cycles, no fixed point
    assert shuffle_objects(Video("one", [], [], [], [Expression("0", "it", 1)]), 0) == {1: 1}  # nothing to swap


# ---------------------------------------------------------------------------------------- submission
@pytest.fixture
def unlabelled(synth_root, tmp_path) -> Path:
    """The synthetic videos as a Ref-YouTube-VOS valid split: frames only, expressions without obj_id or frames."""
    root = tmp_path / "ytvos"
    shutil.copytree(synth_root / "valid" / "JPEGImages", root / "valid" / "JPEGImages")
    meta = json.loads((synth_root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())
    for entry in meta["videos"].values():
        del entry["frames"]
        for expression in entry["expressions"].values():
            del expression["obj_id"], expression["kind"]
    path = root / "meta_expressions" / "valid" / "meta_expressions.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(meta))
    return root


def test_submission_zip_layout(checkpoint, unlabelled, tmp_path):
    out = tmp_path / "sub"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(unlabelled), "--format", "ytvos",
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "submission.zip"]
    expected = {f"Annotations/{v.name}/{e.exp_id}/{name}.png"
                for v in load_ytvos(unlabelled, "valid") for e in v.expressions for name in v.frame_names}
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert set(archive.namelist()) == expected
        with archive.open(sorted(expected)[0]) as handle, Image.open(handle) as image:
            assert image.mode == "L" and image.size == (64, 64)
            assert set(np.unique(np.asarray(image))) <= {0, 255}
    assert _metrics(out)["submission"]["masks"] == len(expected)


def test_incomplete_submission_is_refused(unlabelled, tmp_path):
    videos = load_ytvos(unlabelled, "valid")
    folder = tmp_path / "Annotations"
    for v in videos:
        for e in v.expressions:
            for name in v.frame_names:
                (folder / v.name / e.exp_id).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / v.name / e.exp_id / f"{name}.png")
    missing = folder / videos[1].name / videos[1].expressions[0].exp_id / f"{videos[1].frame_names[3]}.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=str(missing)):
        zip_submission(folder, videos, tmp_path / "submission.zip")
    assert not (tmp_path / "submission.zip").exists()


# --------------------------------------------------------------------------------------------- DAVIS
def test_davis_protocols_on_toy_masks():
    gt = np.zeros((5, 8, 8), np.uint8)
    gt[:, :4] = 1
    gt[:, 4:] = 2
    swapped = np.where(gt == 1, 2, 1).astype(np.uint8)
    semi = davis_object_scores(gt, swapped, "semi", "toy")
    assert len(semi) == 2 and all(len(j) == 3 and (j == 0).all() for j, _ in semi)  # frames 1..T-2, ids differ
    unsupervised = davis_object_scores(gt, swapped, "unsupervised", "toy")
    assert all(len(j) == 5 and (j == 1).all() and (f == 1).all() for j, f in unsupervised)  # Hungarian re-pairs
    with pytest.raises(InputError, match="toy: predicted object id 3"):
        davis_object_scores(gt, np.full_like(gt, 3), "semi", "toy")


def _davis_root(synth_root: Path, root: Path) -> Path:
    """The synthetic videos in the DAVIS-2017 layout with Khoreva-style expression files for both annotators."""
    videos = load_ytvos(synth_root, "valid")
    for folder in ("Annotations", "Annotations_unsupervised"):
        for v in videos:
            shutil.copytree(synth_root / "valid" / "Annotations" / v.name, root / folder / "480p" / v.name)
    for v in videos:
        shutil.copytree(synth_root / "valid" / "JPEGImages" / v.name, root / "JPEGImages" / "480p" / v.name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(v.name for v in videos) + "\n")
    (root / "davis_text_annotations").mkdir()
    for annotator in (1, 2):
        lines = []
        for v in videos:
            for obj in sorted({e.obj_id for e in v.expressions}):
                texts = [e.text for e in v.expressions if e.obj_id == obj]
                lines.append(f'{v.name} {obj} "{texts[min(annotator, len(texts)) - 1]}"')
        (root / "davis_text_annotations" / f"Davis17_annot{annotator}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("protocol", ["semi", "unsupervised"])
def test_eval_davis_both_annotators(checkpoint, synth_root, tmp_path, protocol):
    root = _davis_root(synth_root, tmp_path / "DAVIS")
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--format", "davis",
                 "--annotator", "both", "--protocol", protocol, "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    result = _metrics(out)
    one, two = result["per_annotator"]["1"], result["per_annotator"]["2"]
    assert result["J&F"] == pytest.approx((one["J&F"] + two["J&F"]) / 2)
    n_objects = sum(len({e.obj_id for e in v.expressions}) for v in load_ytvos(synth_root, "valid"))
    assert one["objects"] == two["objects"] == n_objects
    frames = {row["frames"] for row in result["per_object"]}
    assert frames == ({4} if protocol == "semi" else {6})  # semi: first and last frames are not scored
    ids = read_mask(next((out / "predictions" / "annot2").rglob("*.png")))
    assert ids.shape == (64, 64) and ids.max() <= 4
    # the merged id maps written are the ones scored
    again = tmp_path / "again"
    assert main(["eval", "--predictions", str(out / "predictions"), "--data", str(root), "--format", "davis",
                 "--annotator", "both", "--protocol", protocol, "--out", str(again), "--no-progress"]) == 0
    assert _metrics(again)["per_object"] == result["per_object"]


def test_eval_davis_osvos_matches_published_scores(real_data, tmp_path):
    """OSVOS's real DAVIS predictions scored through `yofo eval --predictions` (semi protocol)."""
    root, predictions = tmp_path / "DAVIS", tmp_path / "predictions" / "annot1"
    for seq in PUBLISHED_OSVOS_MEANS:
        for folder in ("JPEGImages", "Annotations"):
            (root / folder / "480p").mkdir(parents=True, exist_ok=True)
            os.symlink(real_data / "DAVIS" / folder / "480p" / seq, root / folder / "480p" / seq)
        predictions.mkdir(parents=True, exist_ok=True)
        os.symlink(real_data / "osvos" / seq, predictions / seq)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(PUBLISHED_OSVOS_MEANS) + "\n")
    (root / "davis_text_annotations").mkdir()
    (root / "davis_text_annotations" / "Davis17_annot1.txt").write_text(
        'blackswan 1 "a black swan"\ncar-shadow 1 "a silver car"\n')
    from yofo.engine.evaluate import evaluate

    result = evaluate(root, "davis", tmp_path / "out", predictions=tmp_path / "predictions", progress=False)
    for row in result["per_object"]:
        j, f = PUBLISHED_OSVOS_MEANS[row["video"]]
        assert row["J-Mean"] == pytest.approx(j, abs=1e-4) and row["F-Mean"] == pytest.approx(f, abs=1e-4)
    assert result["J"]["mean"] == pytest.approx(np.mean([m[0] for m in PUBLISHED_OSVOS_MEANS.values()]), abs=1e-4)


# ----------------------------------------------------------------------------------------- bad input
def test_not_a_checkpoint(synth_root, tmp_path, capsys):
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--checkpoint", str(bad), "--data", str(synth_root), "--format", "synthetic",
                 "--out", str(tmp_path / "out")]) == 2
    assert str(bad) in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_and_missized_predictions(synth_root, tmp_path, capsys):
    video = load_ytvos(synth_root, "valid")[0]
    predictions = tmp_path / "pred"
    for v in load_ytvos(synth_root, "valid"):
        for e in v.expressions:
            for name in v.frame_names:
                write_palette_png(predictions / v.name / e.exp_id / f"{name}.png", np.zeros((64, 64), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier run")
    args = ["eval", "--predictions", str(predictions), "--data", str(synth_root), "--format", "synthetic",
            "--out", str(out), "--no-progress"]
    path = predictions / video.name / video.expressions[0].exp_id / f"{video.frame_names[2]}.png"
    write_palette_png(path, np.zeros((32, 64), np.uint8))
    assert main(args) == 2
    err = _error(capsys)
    assert str(path) in err and "64x32" in err
    path.unlink()
    assert main(args) == 2
    err = _error(capsys)
    assert str(path) in err and "missing" in err
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]  # a failed run leaves an existing folder alone
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # and no temporary folder


def test_synthetic_format_needs_kinds(unlabelled, synth_root, tmp_path, capsys):
    meta = json.loads((synth_root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())
    for entry in meta["videos"].values():
        for expression in entry["expressions"].values():
            del expression["kind"]
    root = tmp_path / "plain"
    shutil.copytree(synth_root, root)
    (root / "meta_expressions" / "valid" / "meta_expressions.json").write_text(json.dumps(meta))
    assert main(["eval", "--predictions", str(tmp_path), "--data", str(root), "--format", "synthetic",
                 "--out", str(tmp_path / "out")]) == 2
    assert "has no 'kind'" in _error(capsys)


# ------------------------------------------------------------------------------------------- sharding
@pytest.mark.slow
def test_sharded_eval_equals_single_process(checkpoint, synth_root, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    common = ["--checkpoint", str(checkpoint), "--data", str(synth_root), "--format", "synthetic", "--control",
              "shuffle", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "yofo", "eval", *common, "--out", str(single)], env=env, check=True,
                   timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "yofo", "eval", *common, "--out", str(sharded)], env=env, check=True, timeout=600)
    one, two = _metrics(single), _metrics(sharded)
    assert two["speed"]["processes"] == 2
    for key in ("J&F", "J", "F", "per_kind", "per_cue", "control", "per_object"):
        assert two[key] == one[key]
    assert sorted(p.relative_to(sharded) for p in sharded.rglob("*.png")) == \
        sorted(p.relative_to(single) for p in single.rglob("*.png"))
