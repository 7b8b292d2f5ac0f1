"""Model checkpoints: one ``.safetensors`` file whose metadata holds the model config and what it was trained on.

``save_model`` writes atomically (temporary file + rename), so an interrupted write never corrupts an
earlier checkpoint. ``load_model`` (exported as ``yofo.load``) rebuilds the network from the config in the
metadata. With ``model.text_encoder.store_weights=false`` the transformer's weights are left out (they are
read again from ``model.text_encoder.name``), which keeps checkpoints of small models small.

Metadata (all strings): ``format`` ("yofo"), ``yofo_version``, ``yofo_config`` (the model config as JSON),
and from the trainer ``step``, ``trained_on`` (:func:`training_metadata`: the datasets, JSON) and, for a
model trained on the synthetic benchmark, ``synth`` (its ``synth.json``, which ``yofo demo`` regenerates).
:func:`checkpoint_info` gathers them with the file's size and sha256 (``yofo info``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save

from yofo import __version__
from yofo.config import load_config, model_config_differences, model_config_from_dict
from yofo.errors import CheckpointError, YofoError
from yofo.files import atomic_write, file_sha256
from yofo.model.yofo import YOFO, build_model

FORMAT = "yofo"
_TEXT_WEIGHTS = "text_encoder.bert."


def model_state(model: YOFO) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: the state dict, minus the text transformer when it is not stored."""
    state = model.state_dict()
    if not model.cfg.text_encoder.store_weights:
        state = {k: v for k, v in state.items() if not k.startswith(_TEXT_WEIGHTS)}
    return state


def save_model(model: YOFO, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` to ``path`` (``.safetensors``) with its config (and ``metadata``) in the header."""
    meta = {"format": FORMAT, "yofo_version": __version__,
            "yofo_config": json.dumps(OmegaConf.to_container(model.cfg, resolve=True))}
    meta.update(metadata or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state(model).items()}
    data = canonical_safetensors(save(tensors, metadata=meta))
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def canonical_safetensors(data: bytes) -> bytes:
    """Rewrite a safetensors file's JSON header with sorted keys, so equal tensors give equal bytes.

    safetensors emits its header from a hash map, whose order changes from process to process; the
    tensor data and offsets are unchanged, and the header keeps its length (the format allows trailing
    spaces), so the result is the same file for any reader and its sha256 is reproducible.
    """
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + header.ljust(length, b" ") + data[8 + length :]


def read_metadata(path: str | Path) -> dict[str, str]:
    """Header metadata of a yofo checkpoint; raises :class:`CheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        raise CheckpointError(f"{path}: not a safetensors file (a yofo checkpoint is a .safetensors file)") from None
    if meta.get("format") != FORMAT or "yofo_config" not in meta:
        raise CheckpointError(f"{path}: not a yofo checkpoint (no yofo model config in its metadata)")
    return meta


def checkpoint_model_config(path: str | Path):
    """The model config stored in a checkpoint, validated against the schema."""
    meta = read_metadata(path)
    try:
        data = json.loads(meta["yofo_config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: metadata field 'yofo_config' is not valid JSON") from None
    try:
        return model_config_from_dict(data)
    except YofoError as err:
        raise CheckpointError(f"{path}: incompatible model config ({err})") from None


def load_state(model: YOFO, path: str | Path) -> None:
    """Load a checkpoint's tensors into ``model`` (whose config must match the checkpoint's)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = model_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match the model ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"e.g. {(missing or unexpected)[0]})"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{path}: tensor '{key}' has shape {tuple(value.shape)}, "
                                  f"the model expects {tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=False)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> YOFO:
    """Rebuild a YOFO model from a checkpoint, in eval mode on ``device``.

    Raises:
        CheckpointError: the file is missing, not a yofo checkpoint, or does not match its own config.
    """
    cfg = checkpoint_model_config(path)
    model = build_model(cfg, load_pretrained=False)
    load_state(model, path)
    model.checkpoint, model.trained_on = str(path), training_data(path)
    return model.to(device).eval()


# --------------------------------------------------------------------------------- training data
SYNTHETIC = "yofo synthetic benchmark"


@dataclass(frozen=True)
class TrainingData:
    """What a checkpoint says its model was trained on.

    Attributes:
        recorded: the checkpoint records it (``trained_on`` metadata); checkpoints saved before yofo
            recorded it do not.
        synthetic_only: every dataset is the yofo synthetic benchmark; None when unknown.
        datasets: as recorded, one dict per dataset (``format``, ``root`` folder name, ``split``, ``weight``,
            and ``synth``, the generator settings, for the synthetic benchmark); empty when not recorded.
        summary: one line for people.
    """

    recorded: bool
    synthetic_only: bool | None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""


def training_metadata(data_cfg) -> dict[str, str]:
    """Metadata entries recording the datasets of a ``data`` config: ``trained_on``, and ``synth`` when
    the model is trained on the synthetic benchmark alone.

    Each dataset is recorded by format, split, weight and the name of its root folder (not the whole
    path, which says more about the machine than about the data). A root written by ``yofo synth`` is
    the synthetic benchmark (:func:`yofo.data.synthetic.benchmark_settings`) and records its settings.

    Raises:
        DatasetError: the config names no dataset.
    """
    from yofo.data.load import dataset_specs
    from yofo.data.synthetic import benchmark_settings

    datasets = []
    for spec in dataset_specs(data_cfg):
        entry: dict[str, Any] = {"format": spec.format, "root": Path(spec.root).name, "split": spec.split,
                                 "weight": spec.weight}
        if spec.format == "refcoco":
            entry["dataset"] = spec.dataset
        if (settings := benchmark_settings(spec.root)) is not None:
            entry["synth"] = settings
        datasets.append(entry)
    meta = {"trained_on": json.dumps(datasets, sort_keys=True)}
    if len(datasets) == 1 and "synth" in datasets[0]:
        meta["synth"] = json.dumps(datasets[0]["synth"], sort_keys=True)
    return meta


def describe_datasets(datasets: list[dict[str, Any]]) -> str:
    """One line for people naming recorded datasets (the parsed ``trained_on`` metadata)."""
    return "; ".join(_describe(d) for d in datasets)


def _describe(entry: dict[str, Any]) -> str:
    if "synth" in entry:
        synth = entry["synth"]
        size = "x".join(str(v) for v in synth.get("size", []))
        return (f"{SYNTHETIC} ('{entry['root']}': yofo synth seed {synth.get('seed')}, {synth.get('train')} "
                f"train videos of {synth.get('frames')} frames at {size})")
    name = f"{entry['format']} {entry['dataset']}" if "dataset" in entry else entry["format"]
    return f"{name} '{entry['root']}' split {entry['split']} (weight {entry['weight']:g})"


def training_data(path: str | Path) -> TrainingData:
    """What the checkpoint at ``path`` was trained on (see :class:`TrainingData`).

    A checkpoint saved before yofo recorded its data has no ``trained_on``. If its model config is that of
    ``configs/demo-scratch.yaml``, the synthetic-benchmark recipe of the demo checkpoint shipped then (and
    which has no pretrained encoder to start real-video training from), it is taken as synthetic-only and
    the summary says that this is inferred; otherwise the data is unknown.
    """
    meta = read_metadata(path)
    if "trained_on" in meta:
        try:
            datasets = json.loads(meta["trained_on"])
            synthetic = all("synth" in d for d in datasets)
            summary = describe_datasets(datasets)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
            raise CheckpointError(f"{path}: metadata field 'trained_on' is not a list of datasets") from None
        return TrainingData(True, synthetic and bool(datasets), datasets, summary)
    if not model_config_differences(checkpoint_model_config(path), load_config("demo-scratch").model):
        return TrainingData(False, True, [], f"{SYNTHETIC}, inferred: the checkpoint does not record its data "
                                             f"(saved before yofo recorded it) and has the model config of "
                                             f"configs/demo-scratch.yaml, the synthetic-benchmark recipe")
    return TrainingData(False, None, [], "not recorded (the checkpoint was saved before yofo recorded it)")


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Everything a checkpoint says about itself, for ``yofo info``.

    Returns:
        ``{"checkpoint", "size_bytes", "sha256", "yofo_version", "step", "trained_on" (a
        :class:`TrainingData` as a dict), "config" (the model config)}``; ``step`` is None for a
        checkpoint not written by the trainer.

    Raises:
        CheckpointError: missing file, not a yofo checkpoint, or unreadable metadata.
    """
    meta = read_metadata(path)
    config = OmegaConf.to_container(checkpoint_model_config(path), resolve=True)
    return {
        "checkpoint": str(path),
        "size_bytes": Path(path).stat().st_size,
        "sha256": file_sha256(path),
        "yofo_version": meta.get("yofo_version"),
        "step": int(meta["step"]) if meta.get("step", "").isdigit() else None,
        "trained_on": asdict(training_data(path)),
        "config": config,
    }
