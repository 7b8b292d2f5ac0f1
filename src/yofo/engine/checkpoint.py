"""Model checkpoints: one ``.safetensors`` file whose metadata holds the model config.

``save_model`` writes atomically (temporary file + rename), so an interrupted write never corrupts an
earlier checkpoint. ``load_model`` (exported as ``yofo.load``) rebuilds the network from the config in the
metadata. With ``model.text_encoder.store_weights=false`` the transformer's weights are left out (they are
read again from ``model.text_encoder.name``), which keeps checkpoints of small models small.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save

from yofo import __version__
from yofo.config import model_config_from_dict
from yofo.errors import CheckpointError, YofoError
from yofo.files import atomic_write
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
    return model.to(device).eval()
