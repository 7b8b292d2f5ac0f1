"""Small datasets in the official formats, written by the tests (Ref-YouTube-VOS, Ref-DAVIS17, RefCOCO) and a
tiny synthetic benchmark."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from yofo.data.synthetic import synthesize
from yofo.video_io import write_palette_png

H, W = 32, 32


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_ids(path: Path, boxes: dict[int, tuple[int, int, int, int]], size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A palette PNG with object k filling boxes[k] = (top, left, bottom, right); returns the ids."""
    ids = np.zeros(size, dtype=np.uint8)
    for obj_id, (top, left, bottom, right) in boxes.items():
        ids[top:bottom, left:right] = obj_id
    path.parent.mkdir(parents=True, exist_ok=True)
    write_palette_png(path, ids)
    return ids


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def ytvos_root(tmp_path: Path) -> Path:
    """train: a1 (objects 1 and 2; 2 appears from the second frame), b2 (object 1). valid: v1..v3, no labels,
    no frame lists; test_meta.json lists v3."""
    root = tmp_path / "ytvos"
    frames = {"a1": ["00000", "00005", "00010"], "b2": ["00000", "00005"]}
    for video, names in frames.items():
        for t, name in enumerate(names):
            write_jpeg(root / "train" / "JPEGImages" / video / f"{name}.jpg", seed=t)
            boxes = {1: (2, 2, 10, 10)}
            if video == "a1" and t > 0:
                boxes[2] = (12, 16, 20, 30)
            write_ids(root / "train" / "Annotations" / video / f"{name}.png", boxes)
    write_json(
        root / "meta_expressions" / "train" / "meta_expressions.json",
        {
            "videos": {
                "a1": {
                    "expressions": {
                        "0": {"exp": "a red car", "obj_id": "1"},
                        "1": {"exp": "the dog on the left", "obj_id": "2"},
                    },
                    "frames": frames["a1"],
                },
                "b2": {"expressions": {"0": {"exp": "a person", "obj_id": "1"}}, "frames": frames["b2"]},
            }
        },
    )
    write_json(root / "train" / "meta.json", {"videos": {v: {"objects": {"1": {"category": "car"}}} for v in frames}})
    valid = {}
    for video in ("v1", "v2", "v3"):
        for name in ("00000", "00005"):
            write_jpeg(root / "valid" / "JPEGImages" / video / f"{name}.jpg", seed=7)
        valid[video] = {"expressions": {"0": {"exp": f"the thing in {video}"}, "1": {"exp": "another thing"}}}
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", {"videos": valid})
    write_json(tmp_path / "test_meta.json", {"videos": {"v3": valid["v3"]}})
    return root


DAVIS_VIDEOS = {"bear": "train", "classic-car": "val", "dogs-scale": "val"}


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    """3 videos × 3 frames; classic-car has objects 1, 2 and void pixels; the expression files use the known typos
    'clasic-car' and 'dog-scale'; annotator 2's file is latin-1 with an accented word."""
    root = tmp_path / "DAVIS"
    for video in DAVIS_VIDEOS:
        for t in range(3):
            name = f"{t:05d}"
            write_jpeg(root / "JPEGImages" / "480p" / video / f"{name}.jpg", seed=t)
            ids = write_ids(root / "Annotations" / "480p" / video / f"{name}.png", {1: (0, 0, 8, 8), 2: (10, 10, 20, 20)})
            if video == "classic-car":
                ids[8:10, :] = 255  # void band between the objects
                write_palette_png(root / "Annotations" / "480p" / video / f"{name}.png", ids)
            write_ids(root / "Annotations_unsupervised" / "480p" / video / f"{name}.png", {1: (10, 10, 20, 20)})
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("bear\n")
    (sets / "val.txt").write_text("classic-car\ndogs-scale\n")
    text = root / "davis_text_annotations"
    text.mkdir()
    (text / "Davis17_annot1.txt").write_text(
        'bear 1 "a brown bear"\nclasic-car 1 "a black car"\nclasic-car 2 "the white car"\n\ndog-scale 1 "a small dog"\n',
        encoding="utf-8",
    )
    (text / "Davis17_annot1_full_video.txt").write_text(
        'bear 1 "a bear walking"\nclasic-car 1 "a black car driving"\nclasic-car 2 "a parked white car"\n'
        'dog-scale 1 "a dog on a scale"\n',
        encoding="utf-8",
    )
    (text / "Davis17_annot2.txt").write_bytes(
        'bear 1 "un ours"\nclasic-car 1 "la voiture café"\nclasic-car 2 "white car"\ndog-scale 1 "dog"\n'.encode("latin-1")
    )
    (text / "Davis17_annot2_full_video.txt").write_bytes(
        'bear 1 "bear"\nclasic-car 1 "car"\nclasic-car 2 "second car"\ndog-scale 1 "dog"\n'.encode("latin-1")
    )
    return root


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture
def refcoco_root(tmp_path: Path) -> Path:
    """REFER layout: refs(unc).p (pickle protocol 2, as Python 2 wrote it) and instances.json with a polygon
    annotation (ref 10, train), a compressed RLE (ref 11, train) and one val ref."""
    root = tmp_path / "refer"
    images = root / "images" / "mscoco" / "images" / "train2014"
    write_jpeg(images / "COCO_train2014_000000000001.jpg", seed=1, size=(20, 30))
    write_jpeg(images / "COCO_train2014_000000000002.jpg", seed=2, size=(20, 30))
    rle_mask = np.zeros((20, 30), dtype=np.uint8)
    rle_mask[5:15, 20:28] = 1
    instances = {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 20, "width": 30},
            {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": 20, "width": 30},
        ],
        "annotations": [
            # polygon: the rectangle x 2..12, y 4..10, plus an overlapping second polygon (REFER sums them)
            {"id": 100, "image_id": 1, "category_id": 1, "segmentation": [[2, 4, 12, 4, 12, 10, 2, 10], [4, 4, 8, 4, 8, 8, 4, 8]],
             "area": 60.0, "bbox": [2, 4, 10, 6], "iscrowd": 0},
            {"id": 101, "image_id": 2, "category_id": 1, "segmentation": _compressed_rle(rle_mask),
             "area": 80.0, "bbox": [20, 5, 8, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    write_json(root / "refcoco" / "instances.json", instances)

    def ref(ref_id: int, ann_id: int, image_id: int, split: str, sentences: list[str]) -> dict:
        sents = [{"tokens": s.split(), "raw": s.upper(), "sent": s, "sent_id": ref_id * 10 + i} for i, s in enumerate(sentences)]
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": 1, "split": split,
                "file_name": "ignored.jpg", "sent_ids": [s["sent_id"] for s in sents], "sentences": sents}

    refs = [
        ref(10, 100, 1, "train", ["left box", "the wide box"]),
        ref(11, 101, 2, "train", ["right thing"]),
        ref(12, 100, 1, "val", ["val box"]),
    ]
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic benchmark: 24 train + 6 valid videos of 10 frames at 64×96."""
    root = tmp_path_factory.mktemp("synth") / "bench"
    synthesize(root, train=24, valid=6, seed=3, size=(64, 96), frames=10)
    return root
