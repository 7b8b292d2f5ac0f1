"""The paper recipe as the README gives it, end to end through the CLI, on datasets in their official formats.

From the real DAVIS frames and masks and the real Ref-DAVIS expressions in ``../shared/data/real`` (skipped
when absent) the test builds a small Ref-YouTube-VOS (train with ``meta.json``, valid without masks plus a
test meta file), a Ref-DAVIS17 folder (ImageSets train/val, the four ``Davis17_annot*`` files, annotator 2 in
latin-1, semi and unsupervised ground truth) and a RefCOCO folder (``refs(unc).p``, ``instances.json``,
``images/mscoco/images/train2014``), and a torchvision-keyed ResNet-50 ``.pth``. It then runs the README's
``yofo train paper ...`` command with those roots (small input size, 2 steps, the bundled MiniLM), and
``yofo eval`` on the Ref-DAVIS17 val part (both protocols, both annotators) and on the Ref-YouTube-VOS valid
split (submission zip), checking what a user would look at.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as coco_mask

import yofo
from yofo.data.records import read_mask
from yofo.model.image_encoder import ResNet

from readme import readme_commands

FRAMES = 6  # frames of each real video used; every video keeps its first frames, so the numbering has no gap
YTVOS_TRAIN, YTVOS_VALID = ("blackswan", "dog"), ("camel", "car-shadow")  # car-shadow: the "test" part
DAVIS_TRAIN, DAVIS_VAL = ("camel", "car-shadow"), ("breakdance", "drift-straight")
SMALL = ["--max-steps", "2", "model.input_size=[96,160]", "train.num_threads=1",
         "model.text_encoder.name=all-MiniLM-L6-v2"]


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def _expressions(real: Path) -> dict[str, str]:
    """The real Ref-DAVIS expression of object 1 of each real video (the RefVOS CSV)."""
    with open(real / "ref-davis" / "DAVIS17_RE_categorization.csv", newline="", encoding="utf-8") as handle:
        return {row["video_id"]: row["ref_exp"] for row in csv.DictReader(handle, delimiter=";")
                if row["instance_id"] == "1"}


def _build_ytvos(real: Path, root: Path, texts: dict[str, str]) -> Path:
    davis = real / "DAVIS"
    train = {}
    for video in YTVOS_TRAIN:
        names = [f"{t:05d}" for t in range(0, 5 * FRAMES, 5)]  # Ref-YouTube-VOS annotates every 5th frame
        for name in names:
            _link(davis / "JPEGImages" / "480p" / video / f"{name}.jpg", root / "train" / "JPEGImages" / video / f"{name}.jpg")
            _link(davis / "Annotations" / "480p" / video / f"{name}.png", root / "train" / "Annotations" / video / f"{name}.png")
        train[video] = {"expressions": {"0": {"exp": texts[video], "obj_id": "1"},
                                        "1": {"exp": f"the {video} in the video", "obj_id": "1"}}, "frames": names}
    meta = {"videos": {v: {"objects": {"1": {"category": v, "frames": train[v]["frames"]}}} for v in YTVOS_TRAIN}}
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    valid = {}
    for video in YTVOS_VALID:
        for t in range(FRAMES):
            name = f"{t:05d}"
            _link(davis / "JPEGImages" / "480p" / video / f"{name}.jpg", root / "valid" / "JPEGImages" / video / f"{name}.jpg")
        valid[video] = {"expressions": {"0": {"exp": texts[video]}, "1": {"exp": f"the {video}"}}}
    for split, videos in (("train", train), ("valid", valid), ("test", {"car-shadow": valid["car-shadow"]})):
        (root / "meta_expressions" / split).mkdir(parents=True)
        (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    return root


def _build_davis(real: Path, root: Path, texts: dict[str, str]) -> Path:
    davis = real / "DAVIS"
    for video in DAVIS_TRAIN + DAVIS_VAL:
        for t in range(FRAMES):
            name = f"{t:05d}"
            _link(davis / "JPEGImages" / "480p" / video / f"{name}.jpg", root / "JPEGImages" / "480p" / video / f"{name}.jpg")
            for gt in ("Annotations", "Annotations_unsupervised"):  # one object: both protocols see the same GT
                _link(davis / "Annotations" / "480p" / video / f"{name}.png", root / gt / "480p" / video / f"{name}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("".join(f"{v}\n" for v in DAVIS_TRAIN))
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{v}\n" for v in DAVIS_VAL))
    text = root / "davis_text_annotations"
    text.mkdir()
    videos = DAVIS_TRAIN + DAVIS_VAL
    (text / "Davis17_annot1.txt").write_text("".join(f'{v} 1 "{texts[v]}"\n' for v in videos), encoding="utf-8")
    (text / "Davis17_annot1_full_video.txt").write_text(
        "".join(f'{v} 1 "{texts[v]} in every frame"\n' for v in videos), encoding="utf-8")
    (text / "Davis17_annot2.txt").write_bytes("".join(f'{v} 1 "{v}, the one in front (é)"\n' for v in videos)
                                              .encode("latin-1"))
    (text / "Davis17_annot2_full_video.txt").write_bytes("".join(f'{v} 1 "{v} à droite"\n' for v in videos)
                                                         .encode("latin-1"))
    return root


def _build_refcoco(real: Path, root: Path, texts: dict[str, str]) -> Path:
    images = root / "images" / "mscoco" / "images" / "train2014"
    instances: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    refs = []
    for k, video in enumerate(("blackswan", "breakdance", "drift-straight"), start=1):
        file_name = f"COCO_train2014_{k:012d}.jpg"
        _link(real / "DAVIS" / "JPEGImages" / "480p" / video / "00000.jpg", images / file_name)
        mask = read_mask(real / "DAVIS" / "Annotations" / "480p" / video / "00000.png") == 1
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        instances["images"].append({"id": k, "file_name": file_name, "height": mask.shape[0], "width": mask.shape[1]})
        instances["annotations"].append({"id": 100 + k, "image_id": k, "category_id": 1, "iscrowd": 0,
                                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                                         "area": float(mask.sum()), "bbox": list(coco_mask.toBbox(rle))})
        sentences = [{"tokens": texts[video].split(), "raw": texts[video], "sent": texts[video], "sent_id": 10 * k}]
        refs.append({"ref_id": k, "ann_id": 100 + k, "image_id": k, "category_id": 1, "split": "train",
                     "file_name": file_name, "sent_ids": [10 * k], "sentences": sentences})
    (root / "refcoco").mkdir(parents=True)
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))  # as REFER's Python 2 wrote it
    return root


def _resnet50_pth(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-keyed ResNet-50 state dict with its classifier (random weights), saved as ``.pth``."""
    torch.manual_seed(0)
    state = ResNet("resnet50").state_dict()
    state = {**state, "fc.weight": torch.randn(1000, 2048) * 0.01, "fc.bias": torch.zeros(1000)}
    torch.save(state, path)
    return state


def _readme_paper_command() -> list[str]:
    """The README's ``yofo train paper`` command with the three dataset roots, as argv."""
    (command,) = [c for c, error in readme_commands() if c.startswith("yofo train paper ") and error is None]
    return shlex.split(command)


def _yofo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "yofo", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


# 35 s on the idle 2-core machine (ResNet-50 and MiniLM built four times), in the default suite.
def test_readme_paper_recipe_trains_and_evaluates_on_real_format_data(real_data: Path, tmp_path: Path) -> None:
    texts = _expressions(real_data)
    ytvos = _build_ytvos(real_data, tmp_path / "ref-youtube-vos", texts)
    davis = _build_davis(real_data, tmp_path / "DAVIS", texts)
    refer = _build_refcoco(real_data, tmp_path / "refer", texts)
    weights = tmp_path / "resnet50.pth"
    pretrained = _resnet50_pth(weights)

    # The README's command, its placeholder paths pointed at the folders just built.
    places = {"/data/ref-youtube-vos": ytvos, "/data/DAVIS": davis, "/data/refer": refer,
              "/models/resnet50.pth": weights, "runs/paper": tmp_path / "runs" / "paper"}
    argv = _readme_paper_command()
    assert argv[:3] == ["yofo", "train", "paper"]
    argv = [re.sub(r"(?<==)/\S+$|^runs/paper$", lambda m: str(places.get(m.group(0), m.group(0))), a) for a in argv]
    assert all(str(root) in " ".join(argv) for root in (ytvos, davis, refer, weights))
    run = _yofo(*argv[1:], *SMALL, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "runs" / "paper"

    model = yofo.load(out / "model.safetensors")
    assert model.cfg.image_encoder.arch == "resnet50" and list(model.cfg.input_size) == [96, 160]
    assert model.cfg.text_encoder.name == "all-MiniLM-L6-v2"
    encoder = model.image_encoder.state_dict()
    # conv1 and layer1 never train (LWL): they must still be the .pth's weights
    assert torch.equal(encoder["conv1.weight"], pretrained["conv1.weight"])
    assert torch.equal(encoder["layer1.0.conv1.weight"], pretrained["layer1.0.conv1.weight"])
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["2"] and float(rows[0]["loss"]) > 0
    config = (out / "config.yaml").read_text()
    assert all(f"root: {root}" in config for root in (ytvos, davis, refer)) and "num_workers: auto" in config

    ckpt = str(out / "model.safetensors")
    for protocol in ("semi", "unsupervised"):
        result = _yofo("eval", "--checkpoint", ckpt, "--data", str(davis), "--format", "davis", "--annotator", "both",
                       "--expressions", "first_frame", "--protocol", protocol, "--out", f"eval/davis-{protocol}",
                       "--no-progress", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((tmp_path / "eval" / f"davis-{protocol}" / "metrics.json").read_text())
        assert metrics["protocol"] == protocol and metrics["objects"] == 4 and set(metrics["per_annotator"]) == {"1", "2"}
        assert 0 <= metrics["J&F"] <= 1 and set(metrics["J"]) == {"mean", "recall", "decay"}
        objects = metrics["per_object"]
        assert sorted((o["video"], o["annotator"]) for o in objects) == [(v, a) for v in DAVIS_VAL for a in (1, 2)]
        # semi (RefVOS) scores without the first and last frames, unsupervised (ReferFormer) all of them
        assert {o["frames"] for o in objects} == {FRAMES - 2 if protocol == "semi" else FRAMES}
        assert "breakdance, the one in front (é)" in {o["text"] for o in objects}  # annotator 2, latin-1

    result = _yofo("eval", "--checkpoint", ckpt, "--data", str(ytvos), "--format", "ytvos", "--split", "valid",
                   "--test-meta", str(ytvos / "meta_expressions" / "test" / "meta_expressions.json"),
                   "--out", "eval/ytvos", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "eval" / "ytvos" / "submission.zip") as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
        # camel only: car-shadow is in the test meta file; one PNG per frame and expression, at the frame's size
        assert names == [f"Annotations/camel/{e}/{t:05d}.png" for e in ("0", "1") for t in range(FRAMES)]
        with archive.open(names[0]) as png:
            from PIL import Image

            assert Image.open(png).size == (854, 480)
