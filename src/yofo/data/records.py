"""What the dataset readers return, and the readers of single files they share.

A video dataset (Ref-YouTube-VOS, Ref-DAVIS17, the synthetic benchmark) is a list of :class:`Video`; an
image dataset (RefCOCO family) is a list of :class:`ImageRef`. Nothing is decoded when a dataset is
loaded: records hold paths, and :func:`read_frame` / :func:`read_mask` decode one file when asked.

    video = load_ytvos("ref-youtube-vos", "train")[0]
    frame = read_frame(video.frame_paths[0])          # uint8 (H, W, 3)
    ids = read_mask(video.mask_paths[0])              # uint8 (H, W): 0 background, k object k, 255 void
    target = ids == video.expressions[0].obj_id
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from yofo.errors import DatasetError

VOID = 255  # DAVIS marks ambiguous pixels with 255; they are neither target nor background


@dataclass(frozen=True)
class Expression:
    """One referring expression.

    Attributes:
        exp_id: the id in the dataset's files (Ref-YouTube-VOS ``exp_id``; Ref-DAVIS17: see
            :func:`yofo.data.davis.load_davis`).
        text: the sentence.
        obj_id: the object id it refers to (pixel value in the masks), None when the split has no labels.
        kind: synthetic data only: which cues identify the target (``appearance``, ``motion``,
            ``position`` or a ``+``-joined combination); None for real data.
    """

    exp_id: str
    text: str
    obj_id: int | None
    kind: str | None = None


@dataclass
class Video:
    """A video with its expressions; frames in temporal order.

    Attributes:
        name: video id (folder name).
        frame_names: frame file stems, e.g. ``00000``.
        frame_paths: one RGB image per frame.
        mask_paths: aligned with the frames; a palette PNG of object ids, None where the frame has no mask.
        expressions: the referring expressions of this video.
        problems: what the reader found wrong with the video's files (e.g. a gap in the frame numbering),
            each naming the file; ``yofo data stats`` lists them, training and evaluation refuse the video
            (:func:`refuse_problems`).
    """

    name: str
    frame_names: list[str]
    frame_paths: list[Path]
    mask_paths: list[Path | None]
    expressions: list[Expression] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def refuse_problems(records: Sequence[Any]) -> None:
    """Raise DatasetError on the first video whose reader found a problem (see :attr:`Video.problems`)."""
    for record in records:
        if isinstance(record, Video) and record.problems:
            extra = len(record.problems) - 1
            more = f" (and {extra} more; `yofo data stats --strict` lists them)" if extra else ""
            raise DatasetError(f"video '{record.name}': {record.problems[0]}{more}")


@dataclass
class ImageRef:
    """One referred object in one image (RefCOCO family): the image, its mask source and its sentences.

    Attributes:
        ref_id: the ``ref_id`` in ``refs(<splitBy>).p``.
        image_id: COCO image id.
        image_path: the COCO image file.
        height, width: image size from ``instances.json``.
        segmentation: COCO polygons (list of lists of x, y) or an RLE dict; see :meth:`mask`.
        sentences: one :class:`Expression` per sentence (``exp_id`` = ``sent_id``, ``obj_id`` = 1).
    """

    ref_id: int
    image_id: int
    image_path: Path
    height: int
    width: int
    segmentation: Any
    sentences: list[Expression]

    def mask(self) -> np.ndarray:
        """The referred object as uint8 (H, W): 1 object, 0 background (REFER ``getMask``, brief §6.3)."""
        from pycocotools import mask as coco_mask

        try:
            if isinstance(self.segmentation, list):  # polygons
                rles = coco_mask.frPyObjects(self.segmentation, self.height, self.width)
            elif isinstance(self.segmentation.get("counts"), list):  # uncompressed RLE
                rles = coco_mask.frPyObjects(self.segmentation, self.height, self.width)
            else:
                rles = self.segmentation
            decoded = coco_mask.decode(rles)
        except Exception as err:  # pycocotools raises bare TypeError/ValueError/IndexError on bad input
            raise DatasetError(f"instances.json: ref {self.ref_id}: segmentation cannot be decoded ({err})") from None
        if decoded.ndim == 3:  # one channel per polygon; overlapping polygons sum to 2 (REFER)
            decoded = decoded.sum(axis=2)
        return (decoded > 0).astype(np.uint8)


def fit_within(height: int, width: int, box: Sequence[int]) -> tuple[int, int]:
    """Size of a ``height`` × ``width`` image scaled (up or down) to fit inside ``box`` = (H, W), aspect kept."""
    scale = min(box[0] / height, box[1] / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_frame(path: str | Path, fit: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3), optionally resized to fit inside ``fit`` = (H, W), aspect kept.

    The resized size is :func:`fit_within`'s, so one side may come out shorter than ``fit``. Resizing lets JPEG
    decoding work at a reduced DCT scale (``Image.draft``), which makes loading 480p frames for small training
    sizes several times faster than decoding at full size.

    Raises:
        DatasetError: the file is missing or not a readable image (the message names the path).
    """
    try:
        with Image.open(path) as image:
            if fit is not None:
                size = fit_within(image.height, image.width, fit)
                image.draft("RGB", (size[1], size[0]))
                image = image.convert("RGB")
                if image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.BILINEAR)
            else:
                image = image.convert("RGB")
            return np.asarray(image)
    except FileNotFoundError:
        raise DatasetError(f"{path}: frame file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from None


def read_mask(path: str | Path, fit: Sequence[int] | None = None) -> np.ndarray:
    """Read an annotation PNG as uint8 object ids (H, W), optionally resized (nearest) to fit inside ``fit``.

    ``fit`` as :func:`read_frame`: the mask of a frame read with the same ``fit`` has that frame's size.

    Palette PNGs give their palette indices (DAVIS / Ref-YouTube-VOS: 0 background, k object k, 255 void);
    grayscale PNGs give their values.

    Raises:
        DatasetError: missing file, unreadable file, or a colour (RGB) PNG whose ids are ambiguous.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "1"):
                raise DatasetError(f"{path}: mask is a {image.mode} image, expected a palette or grayscale PNG")
            ids = np.asarray(image.convert("L") if image.mode == "1" else image, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: mask file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read mask ({err})") from None
    return ids if fit is None else resize_labels(ids, fit_within(*ids.shape, fit))


def resize_labels(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 label map (h, w) to ``size`` = (H, W) by nearest neighbour (labels never blend)."""
    if ids.shape == tuple(size):
        return ids
    return np.asarray(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))


def read_json(path: Path) -> Any:
    """Parse a JSON file; DatasetError naming the file when it is missing or invalid."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None


def get_field(node: Any, key: str, expected: type | tuple[type, ...], where: Callable[[], str]) -> Any:
    """``node[key]`` checked to be of type ``expected``; DatasetError ``"<where>: missing field 'key'"``.

    ``where`` builds the message prefix (file and position) only when an error is raised.
    """
    if not isinstance(node, dict):
        raise DatasetError(f"{where()}: expected an object, got {type(node).__name__}")
    if key not in node:
        raise DatasetError(f"{where()}: missing field '{key}'")
    value = node[key]
    if not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise DatasetError(f"{where()}: field '{key}' should be {names}, got {type(value).__name__}")
    return value


def parse_obj_id(value: Any, where: Callable[[], str]) -> int:
    """An object id given as int or decimal string, in 1..254; DatasetError otherwise."""
    try:
        obj_id = int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where()}: obj_id {value!r} is not an integer") from None
    if isinstance(value, float) or not 0 < obj_id < VOID:
        raise DatasetError(f"{where()}: obj_id {value!r} must be an integer in 1..254")
    return obj_id


def list_stems(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of the files ``folder/*suffix``; empty when the folder does not exist."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name[: -len(suffix)] for name in names if name.endswith(suffix))
