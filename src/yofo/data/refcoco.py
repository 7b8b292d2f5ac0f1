"""RefCOCO / RefCOCO+ / RefCOCOg reader (REFER layout, brief §6.3).

Layout::

    ROOT/<dataset>/refs(<split_by>).p     pickled list of refs (written by Python 2)
    ROOT/<dataset>/instances.json         COCO annotations of the referred objects
    ROOT/images/mscoco/images/train2014/  COCO train2014 images (or pass ``image_dir``)

The refs file is a pickle, and unpickling can run arbitrary code. :func:`read_refs` therefore uses an
unpickler that admits only plain containers and scalars: any global (a class or function reference, the
only way a pickle can call code) is refused, except ``set``/``frozenset`` which Python 2 pickles need.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from yofo.data.records import Expression, ImageRef, get_field, read_json
from yofo.errors import DatasetError

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
_ALLOWED_GLOBALS = {(module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset")}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data-only pickles: lists, dicts, tuples, sets, strings, numbers, None, bools."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data file")


def read_refs(path: str | Path) -> Any:
    """Unpickle a refs file with :class:`RestrictedUnpickler` (Python 2 strings are read as latin-1).

    Raises:
        DatasetError: missing file, a pickle that references any global (class or function), or a
            malformed pickle.
    """
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, fix_imports=True, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: refs file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DatasetError(f"{path}: not a data-only refs pickle ({err})") from None


def load_refcoco(
    root: str | Path,
    dataset: str = "refcoco",
    split_by: str | None = None,
    split: str = "train",
    image_dir: str | Path | None = None,
) -> list[ImageRef]:
    """Read the refs of one split; each ref carries its image, its COCO segmentation and its sentences.

    Args:
        root: the REFER data folder (holding ``<dataset>/``).
        dataset: ``refcoco``, ``refcoco+`` or ``refcocog``.
        split_by: ``unc``, ``umd`` or ``google``; None takes ``unc`` for refcoco/refcoco+ and ``umd`` for
            refcocog.
        split: e.g. ``train``, ``val``, ``testA``, ``testB``, ``test``.
        image_dir: folder of the COCO train2014 images; default ``ROOT/images/mscoco/images/train2014``.

    Returns:
        the refs of ``split`` in file order; every (ref, sentence) pair is one training sample.

    Raises:
        DatasetError: missing file, malformed field, or a ref whose annotation or image is not in
            ``instances.json``.
    """
    root = Path(root)
    split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
    refs_path = root / dataset / f"refs({split_by}).p"
    instances_path = root / dataset / "instances.json"
    image_dir = Path(image_dir) if image_dir else root / "images" / "mscoco" / "images" / "train2014"
    refs = read_refs(refs_path)
    if not isinstance(refs, list):
        raise DatasetError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    instances = read_json(instances_path)

    images = {}
    for index, image in enumerate(get_field(instances, "images", list, lambda: str(instances_path))):
        where = lambda: f"{instances_path}: images[{index}]"  # noqa: E731 - built only on error
        images[get_field(image, "id", int, where)] = (
            get_field(image, "file_name", str, where),
            get_field(image, "height", int, where),
            get_field(image, "width", int, where),
        )
    annotations = {}
    for index, annotation in enumerate(get_field(instances, "annotations", list, lambda: str(instances_path))):
        where = lambda: f"{instances_path}: annotations[{index}]"  # noqa: E731
        segmentation = get_field(annotation, "segmentation", (list, dict), where)
        annotations[get_field(annotation, "id", int, where)] = segmentation

    records = []
    for index, ref in enumerate(refs):
        where = lambda: f"{refs_path}: ref[{index}]"  # noqa: E731
        if get_field(ref, "split", str, where) != split:
            continue
        ann_id = get_field(ref, "ann_id", int, where)
        image_id = get_field(ref, "image_id", int, where)
        if ann_id not in annotations:
            raise DatasetError(f"{where()}: ann_id {ann_id} is not in {instances_path}")
        if image_id not in images:
            raise DatasetError(f"{where()}: image_id {image_id} is not in {instances_path}")
        sentences = []
        for number, sentence in enumerate(get_field(ref, "sentences", list, where)):
            where_sent = lambda: f"{where()} sentences[{number}]"  # noqa: E731
            text = get_field(sentence, "sent", str, where_sent).strip()
            sent_id = get_field(sentence, "sent_id", int, where_sent)
            sentences.append(Expression(str(sent_id), text, 1))
        file_name, height, width = images[image_id]
        records.append(
            ImageRef(
                ref_id=get_field(ref, "ref_id", int, where),
                image_id=image_id,
                image_path=image_dir / file_name,
                height=height,
                width=width,
                segmentation=annotations[ann_id],
                sentences=sentences,
            )
        )
    return records
