"""RefCOCO reader on a REFER-layout fixture, and the restricted unpickler of the refs file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from yofo.data.refcoco import load_refcoco, read_refs
from yofo.errors import DatasetError


def test_train_refs_load_with_images_sentences_and_masks(refcoco_root: Path) -> None:
    refs = load_refcoco(refcoco_root, "refcoco", split="train")
    assert [r.ref_id for r in refs] == [10, 11]
    first, second = refs
    assert first.image_path == refcoco_root / "images/mscoco/images/train2014/COCO_train2014_000000000001.jpg"
    assert [(s.exp_id, s.text, s.obj_id) for s in first.sentences] == [("100", "left box", 1), ("101", "the wide box", 1)]
    polygon = first.mask()
    assert polygon.shape == (20, 30) and set(np.unique(polygon)) == {0, 1}  # overlapping polygons: still 0/1
    assert polygon[5:9, 3:11].all() and not polygon[12:].any() and not polygon[:, 14:].any()
    rle = second.mask()
    assert rle[5:15, 20:28].all() and rle.sum() == 80
    assert [r.ref_id for r in load_refcoco(refcoco_root, split="val")] == [12]


class _CallsFunction:
    """Unpickling this would call os.mkdir(target)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_rejects_a_pickle_that_calls_a_function(tmp_path: Path) -> None:
    target = tmp_path / "created_by_pickle"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"refs{protocol}.p"
        path.write_bytes(pickle.dumps([{"ref_id": 1, "payload": _CallsFunction(str(target))}], protocol=protocol))
        with pytest.raises(DatasetError, match=r"global '\w+\.mkdir' is not allowed"):
            read_refs(path)
        assert not target.exists()
    path = tmp_path / "class.p"
    path.write_bytes(pickle.dumps([Path("x")], protocol=2))  # any class instance needs a global too
    with pytest.raises(DatasetError, match="not allowed"):
        read_refs(path)


def test_restricted_unpickler_reads_plain_data_and_python2_sets(tmp_path: Path) -> None:
    data = [{"a": 1, "b": [1.5, None, True], "c": ("x", "y"), "d": {1, 2}, "e": frozenset({3})}]
    path = tmp_path / "plain.p"
    path.write_bytes(pickle.dumps(data, protocol=2))  # protocol 2 writes sets as __builtin__.set(list)
    assert read_refs(path) == data


def test_bad_refcoco_input_raises_dataset_error(refcoco_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"refs\(umd\).p: refs file not found"):
        load_refcoco(refcoco_root, "refcoco", split_by="umd")
    refs_path = refcoco_root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs[0].pop("ann_id")
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DatasetError, match=r"ref\[0\]: missing field 'ann_id'"):
        load_refcoco(refcoco_root)
    refs[0]["ann_id"] = 999
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(DatasetError, match="ann_id 999 is not in"):
        load_refcoco(refcoco_root)
    refs_path.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="not a data-only refs pickle"):
        load_refcoco(refcoco_root)
