"""Counts and problems of a dataset split, for ``yofo data stats``.

Reading a split (:func:`yofo.data.load.load_dataset`) checks the structure: folders, expression files and
their fields. This module then opens every file and lists what would break training or evaluation later:
missing or unreadable frames and masks, what the reader recorded in ``Video.problems`` (gaps in a DAVIS
video's frame numbering, masks without their frame), masks whose size differs from their frame, expressions whose
object never appears in a mask, videos without frames or expressions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from yofo.data.records import VOID, ImageRef, Video, read_mask
from yofo.errors import DatasetError


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image after decoding it at a reduced scale (cheap, but catches truncated files).

    Raises:
        DatasetError: missing or unreadable file.
    """
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from None


def video_stats(videos: list[Video], progress: bool = False) -> dict[str, Any]:
    """Counts (videos, frames, objects, expressions, masks; expression kinds when known) and problems.

    ``objects`` counts the distinct object ids seen in each video's masks, or the distinct ``obj_id`` of
    its expressions when the split has no masks.
    """
    counts = {"videos": len(videos), "frames": 0, "objects": 0, "expressions": 0, "masks": 0}
    kinds: dict[str, int] = {}
    problems: list[str] = []
    for video in tqdm(videos, unit="video", disable=None if progress else True):
        counts["frames"] += len(video.frame_paths)
        counts["expressions"] += len(video.expressions)
        if not video.frame_paths:
            problems.append(f"video '{video.name}': no frames")
        if not video.expressions:
            problems.append(f"video '{video.name}': no expressions")
        problems.extend(video.problems)
        seen: set[int] = set()
        for frame_path, mask_path in zip(video.frame_paths, video.mask_paths):
            try:
                size = image_size(frame_path)
            except DatasetError as err:
                problems.append(str(err))
                size = None
            if mask_path is None:
                continue
            counts["masks"] += 1
            try:
                ids = read_mask(mask_path)
            except DatasetError as err:
                problems.append(str(err))
                continue
            if size is not None and ids.shape != size:
                problems.append(f"{mask_path}: mask is {ids.shape[1]}x{ids.shape[0]}, frame is {size[1]}x{size[0]}")
            present = np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
            seen.update(int(i) for i in present if i not in (0, VOID))
        has_masks = any(path is not None for path in video.mask_paths)
        referred = {e.obj_id for e in video.expressions if e.obj_id is not None}
        counts["objects"] += len(seen) if has_masks else len(referred)
        for expression in video.expressions:
            if expression.kind is not None:
                kinds[expression.kind] = kinds.get(expression.kind, 0) + 1
            if has_masks and expression.obj_id is not None and expression.obj_id not in seen:
                problems.append(
                    f"video '{video.name}' expression '{expression.exp_id}': obj_id {expression.obj_id} has no mask"
                )
    result: dict[str, Any] = {**counts, "problems": problems}
    if kinds:
        result["kinds"] = dict(sorted(kinds.items()))
    return result


def image_stats(refs: list[ImageRef], progress: bool = False) -> dict[str, Any]:
    """Counts for an image dataset: ``videos`` and ``frames`` are images, ``objects`` refs, ``masks`` the refs
    whose segmentation decodes, ``expressions`` sentences; problems as for videos."""
    problems: list[str] = []
    images: dict[Path, tuple[int, int] | None] = {}
    masks = 0
    for ref in tqdm(refs, unit="ref", disable=None if progress else True):
        if ref.image_path not in images:
            try:
                images[ref.image_path] = image_size(ref.image_path)
            except DatasetError as err:
                problems.append(str(err))
                images[ref.image_path] = None
        size = images[ref.image_path]
        if size is not None and size != (ref.height, ref.width):
            problems.append(
                f"{ref.image_path}: image is {size[1]}x{size[0]}, instances.json says {ref.width}x{ref.height}"
            )
        try:
            if ref.mask().any():
                masks += 1
            else:
                problems.append(f"ref {ref.ref_id}: empty mask")
        except DatasetError as err:
            problems.append(str(err))
        if not ref.sentences:
            problems.append(f"ref {ref.ref_id}: no sentences")
    return {
        "videos": len(images),
        "frames": len(images),
        "objects": len(refs),
        "expressions": sum(len(ref.sentences) for ref in refs),
        "masks": masks,
        "problems": problems,
    }


def dataset_stats(records: list[Video] | list[ImageRef], progress: bool = False) -> dict[str, Any]:
    """:func:`video_stats` or :func:`image_stats`, whichever fits the records."""
    if records and isinstance(records[0], ImageRef):
        return image_stats(records, progress)  # type: ignore[arg-type]
    return video_stats(records, progress)  # type: ignore[arg-type]
