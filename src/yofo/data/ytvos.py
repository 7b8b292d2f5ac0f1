"""Ref-YouTube-VOS reader (brief §6.2); also reads every dataset written in its layout (``yofo synth``).

Layout::

    ROOT/{split}/JPEGImages/<video>/<frame>.jpg
    ROOT/{split}/Annotations/<video>/<frame>.png          palette PNGs, pixel value = object id (train)
    ROOT/{split}/meta.json                               {"videos": {vid: {"objects": {obj_id: {...}}}}}
    ROOT/meta_expressions/{split}/meta_expressions.json  {"videos": {vid: {"expressions": {exp_id:
                                                           {"exp": str, "obj_id": str}}, "frames": [...]}}}

In the public release, ``valid`` has neither masks nor ``obj_id``, and its expression file holds the valid
and the test videos (507); the evaluated split is the 202 videos left after removing the test file's
videos (``test_meta``).
"""

from __future__ import annotations

from pathlib import Path

from yofo.data.records import Expression, Video, get_field, list_stems, parse_obj_id, read_json
from yofo.errors import DatasetError


def _sort_key(exp_id: str) -> tuple:
    """Numeric exp_ids in numeric order ("2" before "10"), anything else after them by name."""
    return (0, int(exp_id), "") if exp_id.isdigit() else (1, 0, exp_id)


def load_ytvos(root: str | Path, split: str = "train", test_meta: str | Path | None = None) -> list[Video]:
    """Read a split of a dataset in the Ref-YouTube-VOS layout.

    Frames come from the ``frames`` list of the expression file, or from the ``JPEGImages`` folder when the
    list is absent (the published valid file has none). A frame's mask is its ``Annotations`` PNG, None when
    that file does not exist. Extra expression fields are kept only for ``kind`` (synthetic data).

    Args:
        root: the dataset folder.
        split: ``train``, ``valid`` or ``test``.
        test_meta: a test ``meta_expressions.json`` whose videos are removed (valid = file − test).

    Returns:
        the videos, in the order of the expression file.

    Raises:
        DatasetError: missing folder or expression file, malformed field, or an expression without
            ``obj_id`` in a split that has masks.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    videos_node = get_field(read_json(meta_path), "videos", dict, lambda: str(meta_path))
    excluded: set[str] = set()
    if test_meta is not None:
        test_path = Path(test_meta)
        excluded = set(get_field(read_json(test_path), "videos", dict, lambda: str(test_path)))
    image_dir = root / split / "JPEGImages"
    mask_dir = root / split / "Annotations"
    labelled = mask_dir.is_dir()

    videos = []
    for name, entry in videos_node.items():
        if name in excluded:
            continue
        where = lambda: f"{meta_path}: video '{name}'"  # noqa: E731 - built only on error
        expressions_node = get_field(entry, "expressions", dict, where)
        if "frames" in entry:
            frame_names = get_field(entry, "frames", list, where)
            if not all(isinstance(frame, str) for frame in frame_names):
                raise DatasetError(f"{where()}: field 'frames' should list frame names (strings)")
        else:
            frame_names = list_stems(image_dir / name, ".jpg")
            if not frame_names:
                raise DatasetError(f"{where()}: no 'frames' listed and no frames in {image_dir / name}")
        masks = set(list_stems(mask_dir / name, ".png"))
        expressions = []
        for exp_id in sorted(expressions_node, key=_sort_key):
            node = expressions_node[exp_id]
            where_exp = lambda: f"{where()} expression '{exp_id}'"  # noqa: E731
            text = get_field(node, "exp", str, where_exp).strip()
            if not text:
                raise DatasetError(f"{where_exp()}: field 'exp' is empty")
            if "obj_id" in node:
                obj_id = parse_obj_id(node["obj_id"], where_exp)
            elif labelled:
                raise DatasetError(f"{where_exp()} has no obj_id")
            else:
                obj_id = None
            kind = node.get("kind")
            expressions.append(Expression(exp_id, text, obj_id, kind if isinstance(kind, str) else None))
        videos.append(
            Video(
                name=name,
                frame_names=list(frame_names),
                frame_paths=[image_dir / name / f"{frame}.jpg" for frame in frame_names],
                mask_paths=[mask_dir / name / f"{frame}.png" if frame in masks else None for frame in frame_names],
                expressions=expressions,
            )
        )
    return videos
