"""One entry point for every dataset format: a :class:`yofo.config.DatasetSpec` in, records out.

    spec = DatasetSpec(format="davis", root="/data/DAVIS", split="val", annotators=[1], expressions="first_frame")
    videos = load_dataset(spec)            # list[Video]; RefCOCO gives list[ImageRef]
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from yofo.config import DatasetSpec
from yofo.data.davis import load_davis
from yofo.data.records import ImageRef, Video
from yofo.data.refcoco import load_refcoco
from yofo.data.ytvos import load_ytvos
from yofo.errors import DatasetError

FORMATS = ("ytvos", "davis", "refcoco")


def as_spec(spec: DatasetSpec | DictConfig | dict[str, Any], where: str = "dataset") -> DatasetSpec:
    """A :class:`DatasetSpec` from a config node or dict.

    Raises:
        DatasetError: unknown fields, or a root that is empty or left as ``???`` (``where`` names the config
            key in the message, e.g. ``data.datasets.0``).
    """
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, dict):
        unknown = set(spec) - set(DatasetSpec.__dataclass_fields__)
        if unknown:
            raise DatasetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        spec = DatasetSpec(**spec)
    if spec.root in ("", "???"):
        raise DatasetError(f"{where}.root is not set (e.g. {where}.root=/path/to/dataset)")
    return spec


def dataset_specs(data: DictConfig) -> list[DatasetSpec]:
    """The training datasets a ``data`` config names: ``data.root`` (one Ref-YouTube-VOS-layout folder,
    split train) takes precedence over ``data.datasets``.

    Raises:
        DatasetError: neither is set, or a dataset has unknown fields or no root.
    """
    if data.root:
        return [as_spec({"format": "ytvos", "root": data.root, "split": "train"}, "data")]
    if data.datasets:
        return [as_spec(spec, f"data.datasets.{i}") for i, spec in enumerate(data.datasets)]
    raise DatasetError("no training data: set data.root (a Ref-YouTube-VOS-layout folder) or data.datasets")


def load_dataset(spec: DatasetSpec | DictConfig | dict[str, Any]) -> list[Video] | list[ImageRef]:
    """Read one dataset split as described by ``spec`` (format, root, split and format options).

    Returns:
        ``list[Video]`` for ``ytvos`` and ``davis``, ``list[ImageRef]`` for ``refcoco``.

    Raises:
        DatasetError: unknown format, unset root, or any reader error.
    """
    spec = as_spec(spec)
    if spec.format == "ytvos":
        return load_ytvos(spec.root, spec.split, test_meta=spec.test_meta or None)
    if spec.format == "davis":
        return load_davis(spec.root, spec.split, tuple(spec.annotators), spec.expressions, spec.gt)
    if spec.format == "refcoco":
        return load_refcoco(spec.root, spec.dataset, spec.split_by or None, spec.split, spec.images or None)
    raise DatasetError(f"dataset format '{spec.format}' is not one of {', '.join(FORMATS)}")
