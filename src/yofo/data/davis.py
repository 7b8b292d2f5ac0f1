"""Ref-DAVIS17 reader: the official DAVIS-2017 folders plus Khoreva et al.'s expression files (brief §6.1).

Layout::

    ROOT/JPEGImages/480p/<video>/<frame>.jpg
    ROOT/Annotations/480p/<video>/<frame>.png                 semi-supervised GT (gt="semi")
    ROOT/Annotations_unsupervised/480p/<video>/<frame>.png    unsupervised GT (gt="unsupervised")
    ROOT/ImageSets/2017/{train,val}.txt
    ROOT/davis_text_annotations/Davis17_annot{1,2}[_full_video].txt

Expression files have one line per object, ``<video> <obj_id> "<expression>"``; annotator 1's files are
UTF-8 and annotator 2's are latin-1. The object index in the text is the id in the masks (1-based, as
RefVOS reads it). Void pixels (255) stay 255 in the masks.

Frames are listed from the JPEG folder. A gap in their numbering (a deleted ``00010.jpg``) and a mask whose
frame is missing are recorded in :attr:`yofo.data.records.Video.problems`, naming the file: ``yofo data stats
--strict`` reports them and training and evaluation refuse the video, since a clip or a score computed over
the gap would silently skip a frame.

Expression ids follow the conversion used by ReferFormer (four per object, in this order: annotator 1
first-frame, annotator 1 full-video, annotator 2 first-frame, annotator 2 full-video), so
``int(exp_id) % 4`` tells which of the four result sets ``anno_0..3`` an expression belongs to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from yofo.data.records import Expression, Video, list_stems
from yofo.errors import DatasetError

EXPRESSION_TYPES = ("first_frame", "full_video")
GT_FOLDERS = {"semi": "Annotations", "unsupervised": "Annotations_unsupervised"}
ENCODINGS = {1: "utf-8", 2: "latin-1"}
# Misspelt video names in the expression files (ReferFormer's conversion script fixes the same three).
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
_LINE = re.compile(r"^(\S+)\s+(\d+)\s+(.*)$")


def expression_file(annotator: int, expression_type: str) -> str:
    """File name of one annotator's first-frame or full-video expressions."""
    suffix = "_full_video" if expression_type == "full_video" else ""
    return f"Davis17_annot{annotator}{suffix}.txt"


def read_expression_file(path: Path, encoding: str) -> list[tuple[str, int, str]]:
    """Parse one expression file into ``(video, obj_id, text)``, with video-name typos fixed.

    Raises:
        DatasetError: missing or undecodable file, or a line not of the form ``<video> <obj_id> "<text>"``.
    """
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: expression file not found") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not {encoding} text ({err})") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        text = match.group(3).strip().strip('"').strip() if match else ""
        if not match or not text or int(match.group(2)) == 0:
            raise DatasetError(f'{path}:{number}: expected `<video> <obj_id> "<expression>"`, got {line.strip()!r}')
        video = VIDEO_NAME_FIXES.get(match.group(1), match.group(1))
        entries.append((video, int(match.group(2)), text))
    return entries


def load_davis(
    root: str | Path,
    split: str = "val",
    annotators: Sequence[int] = (1,),
    expression_type: str = "first_frame",
    gt: str = "semi",
) -> list[Video]:
    """Read Ref-DAVIS17 videos of one DAVIS-2017 split with the chosen expressions.

    Args:
        root: the DAVIS folder (see the module docstring for the layout).
        split: ``train`` or ``val`` (a file in ``ImageSets/2017``).
        annotators: any of 1, 2.
        expression_type: ``first_frame``, ``full_video`` or ``all`` (both).
        gt: ``semi`` (``Annotations``) or ``unsupervised`` (``Annotations_unsupervised``).

    Returns:
        the videos in ``ImageSets`` order, every frame of each, with the selected expressions.

    Raises:
        DatasetError: missing folder or file, malformed expression line, unknown option.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if gt not in GT_FOLDERS:
        raise DatasetError(f"gt: '{gt}' is not one of {', '.join(GT_FOLDERS)}")
    types = EXPRESSION_TYPES if expression_type == "all" else (expression_type,)
    if any(t not in EXPRESSION_TYPES for t in types):
        raise DatasetError(f"expression_type: '{expression_type}' is not one of first_frame, full_video, all")
    if not annotators or any(a not in ENCODINGS for a in annotators):
        raise DatasetError(f"annotators: {list(annotators)} must be a non-empty subset of [1, 2]")

    split_path = root / "ImageSets" / "2017" / f"{split}.txt"
    try:
        names = [line.strip() for line in split_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise DatasetError(f"{split_path}: split file not found") from None

    expressions: dict[str, list[Expression]] = {name: [] for name in names}
    text_dir = root / "davis_text_annotations"
    for annotator in sorted(set(annotators)):
        for kind_index, expression_type_ in enumerate(EXPRESSION_TYPES):
            if expression_type_ not in types:
                continue
            path = text_dir / expression_file(annotator, expression_type_)
            for video, obj_id, text in read_expression_file(path, ENCODINGS[annotator]):
                if video in expressions:  # lines of the other split are skipped
                    exp_id = 4 * (obj_id - 1) + 2 * (annotator - 1) + kind_index
                    expressions[video].append(Expression(str(exp_id), text, obj_id))

    image_root = root / "JPEGImages" / "480p"
    mask_root = root / GT_FOLDERS[gt] / "480p"
    videos = []
    for name in names:
        frames = list_stems(image_root / name, ".jpg")
        if not frames:
            raise DatasetError(f"{split_path}: video '{name}' has no frames in {image_root / name}")
        masks = set(list_stems(mask_root / name, ".png"))
        videos.append(
            Video(
                name=name,
                frame_names=frames,
                frame_paths=[image_root / name / f"{frame}.jpg" for frame in frames],
                mask_paths=[mask_root / name / f"{frame}.png" if frame in masks else None for frame in frames],
                expressions=sorted(expressions[name], key=lambda e: int(e.exp_id)),
                problems=frame_problems(image_root / name, mask_root / name, frames, masks),
            )
        )
    return videos


def frame_problems(image_dir: Path, mask_dir: Path, frames: list[str], masks: set[str]) -> list[str]:
    """Gaps in the numbering of a video's frames (numeric stems) and masks without their frame, naming files."""
    problems = []
    numbered = sorted((int(stem), stem) for stem in frames if stem.isdigit())
    for (number, stem), (following, _) in zip(numbered, numbered[1:]):
        if following != number + 1:
            missing = str(number + 1).zfill(len(stem))
            problems.append(f"{image_dir / missing}.jpg: frame missing (the numbering jumps from {stem} to "
                            f"{str(following).zfill(len(stem))})")
    for stem in sorted(masks - set(frames)):
        problems.append(f"{mask_dir / stem}.png: mask without its frame {image_dir / stem}.jpg")
    return problems
