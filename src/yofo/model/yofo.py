"""YOFO: image encoder, text encoder, feature mining, meta-transfer and decoder wired together (Fig. 2).

Per frame (shared by every expression of a video): the ResNet, Φ(layer3), and the image-only terms of
feature mining and of the decoder. Per expression: the text encoder (once per video), then per frame the
rest of feature mining (Y, W), the memory and solver, and the rest of the decoder (DESIGN §1).

The memory is a FIFO of the last N (Φ, Y, W) including the current frame. θ starts at zero on a clip's first
frame with ``*_iters`` iterations and is warm-started afterwards with ``*_update_iters`` (brief §2.4, §7.4-5);
training uses the ``train_*`` counts, eval mode the ``test_*`` counts. The clip forward and the streaming
``start``/``step`` API run the same code, so they agree exactly in eval mode.

With motion-aware feature mining (ours, ``model.fm.motion.window``) the state also holds a ring buffer of the
last W frames' L2-normalised layer2 maps (:mod:`yofo.model.motion`), per frame and shared by every expression.
In training, the clip forward can take each frame's true predecessors in the video for that buffer
(``previous``, ``data.motion_history``), so that frames drawn with gaps still see the motion inference sees.

With ``model.decoder.label_skip`` (ours, off in the paper) the 1×1 readout of the decoder's input T(Φ; θ)
(``feature_mining.label_readout``, the one deep supervision trains on Y), upsampled bilinearly, is added to
the decoder's logits. Without it, a decoder trained with the image encoder frozen learns objectness from the
image features alone and puts logit ≈ 0 on every object whatever the sentence, although T(Φ; θ) already
tells the objects apart (measured on the synthetic benchmark, README "Training"); with it, the decoder refines
the sentence's coarse mask.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from yofo.errors import InputError
from yofo.model.decoder import Decoder
from yofo.model.feature_mining import FeatureMining
from yofo.model.image_encoder import ResNetFeatures, build_image_encoder, normalize
from yofo.model.meta_transfer import MetaTransfer, apply_filter
from yofo.model.text_encoder import TextEncoder


@dataclass
class FrameFeatures:
    """Per-frame work shared by all expressions (batch 1, or one frame per expression in training)."""

    layers: ResNetFeatures
    target_input: Tensor | None  # Φ(layer3) (N, feature_dim, h16, w16), None without meta-transfer
    mining: dict
    decoding: list


@dataclass
class StreamState:
    """Inference state of K expressions on one video; its size does not grow with the video length."""

    text: Tensor  # (K, 3, C)
    memory: deque = field(default_factory=deque)  # (Φ (1 or K, C, h, w), Y (K, D, h, w), W (K, D, h, w))
    filters: Tensor | None = None  # θ (K, D, C, k, k)
    frames_seen: int = 0
    # motion-aware FM: ring buffer of the last W frames' L2N(layer2) (1 or K, C2, h8, w8), shared by the K
    motion: deque = field(default_factory=deque)


class YOFO(nn.Module):
    """The YOFO network.

    Args:
        cfg: the model config (``cfg.model`` of :func:`yofo.config.load_config`).
        load_pretrained: read ``cfg.image_encoder.weights`` when set (off when a checkpoint follows).
    """

    def __init__(self, cfg: DictConfig, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        fm, mt = cfg.fm, cfg.meta_transfer
        enc = cfg.image_encoder if load_pretrained else OmegaConf.merge(cfg.image_encoder, {"weights": None})
        self.image_encoder = build_image_encoder(enc)
        c1, c2, c3, c4 = self.image_encoder.channels
        txt = cfg.text_encoder
        self.text_encoder = TextEncoder(txt.name, fm.dim, txt.max_tokens, txt.pooling, txt.layers)
        self.feature_mining = FeatureMining(
            (c2, c3, c4), fm.dim, fm.key_dim, fm.pool_sizes, cfg.target_dim, fm.mode, fm.fusion, fm.strides,
            fm.motion.window, fm.motion.radius, fm.text_film,
        )
        self.meta_transfer = (
            MetaTransfer(c3, mt.feature_dim, mt.filter_size, mt.reg_init, fm.dim if fm.motion.window else 0)
            if mt.enabled else None
        )
        self.decoder = Decoder(cfg.target_dim, (c1, c2, c3, c4), cfg.decoder.width)
        self.memory_size = cfg.memory.size
        # Set by yofo.load: the file and what it says the model was trained on
        # (yofo.engine.checkpoint.TrainingData); VideoSegmenter warns when synthetic-only meets real footage.
        self.checkpoint: str | None = None
        self.trained_on = None

    def train(self, mode: bool = True) -> YOFO:
        """Set training mode; BatchNorm statistics stay frozen (eval) everywhere (brief §2.7, §7.16)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def normalize(self, images: Tensor) -> Tensor:
        """Normalise RGB images in [0, 1] as the image encoder's weights expect: ``(..., 3, H, W)`` -> same."""
        return normalize(images, self.image_encoder.mean, self.image_encoder.std)

    # ----------------------------------------------------------------------------------------- text
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Encode K expressions once per video: ``texts`` -> ``(K, 3, C)`` (z_1, z_2, z_3)."""
        return self.text_encoder(texts)

    def _text(self, text: Tensor | Sequence[str]) -> Tensor:
        return text if isinstance(text, Tensor) else self.encode_text(text)

    # ---------------------------------------------------------------------------------- per frame
    def frame_features(self, images: Tensor, state: StreamState, repeat: int = 1) -> FrameFeatures:
        """Per-frame work: ``images (N, 3, H, W)`` normalised, H and W multiples of 32.

        With ``repeat`` r > 1 the image encoder runs on the N images once and its outputs are repeated to
        N·r rows (image n serves rows n·r … n·r + r − 1); the rest of the per-frame work runs on the N·r rows.
        ``state``'s motion ring buffer (motion-aware FM) receives this frame; nothing else of it is used.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"frames: expected (N, 3, H, W) normalised RGB, got shape {tuple(images.shape)}")
        if images.shape[2] % 32 or images.shape[3] % 32:
            raise InputError(f"frames: height and width must be multiples of 32, got {tuple(images.shape[2:])}")
        layers = self.image_encoder(images)
        if repeat > 1:
            layers = ResNetFeatures(*(x.repeat_interleave(repeat, dim=0) for x in layers))
        motion = self.feature_mining.motion_map(layers.layer2, state.motion)
        return FrameFeatures(
            layers=layers,
            target_input=self.meta_transfer.features(layers.layer3, motion) if self.meta_transfer is not None else None,
            mining=self.feature_mining.image_part(layers[1:], motion),
            decoding=self.decoder.image_part(layers),
        )

    # ----------------------------------------------------------------------------- per expression
    def start(self, text: Tensor | Sequence[str]) -> StreamState:
        """Begin a video for K expressions (strings or the ``(K, 3, C)`` output of :meth:`encode_text`)."""
        return StreamState(text=self._text(text), memory=deque(maxlen=self.memory_size),
                           motion=deque(maxlen=max(1, self.cfg.fm.motion.window)))

    def step(self, frame: Tensor, state: StreamState) -> Tensor:
        """Segment the next frame for the K expressions of ``state``.

        Args:
            frame: ``(3, H, W)`` or ``(1, 3, H, W)`` (shared by all K expressions), or ``(K, 3, H, W)``
                (one frame per expression, as in training).
            state: from :meth:`start`; updated in place.

        Returns:
            logits ``(K, 1, H, W)``; the mask is ``logits > 0``.
        """
        frame = frame.unsqueeze(0) if frame.dim() == 3 else frame
        if frame.dim() == 4 and frame.shape[0] not in (1, state.text.shape[0]):
            raise InputError(f"frame: batch {frame.shape[0]} must be 1 or the number of expressions "
                             f"{state.text.shape[0]}")
        return self._step(self.frame_features(frame, state), state)[0]

    def _step(self, frame: FrameFeatures, state: StreamState) -> tuple[Tensor, Tensor]:
        """Logits ``(K, 1, H, W)`` and the target labels Y ``(K, D, h16, w16)`` of one frame."""
        height, width = frame.layers.layer3.shape[-2:]
        labels, weights = self.feature_mining(frame.mining, state.text, (height, width))
        if self.meta_transfer is None:
            encoding = labels  # "w/o MT": the decoder consumes Y
        else:
            mt = self.cfg.meta_transfer
            state.memory.append((frame.target_input, labels, weights))
            feats = torch.stack([m[0] for m in state.memory], dim=1)  # (1 or K, S, C, h, w)
            first = state.filters is None
            iters = (mt.train_iters if first else mt.train_update_iters) if self.training else (
                mt.test_iters if first else mt.test_update_iters)
            state.filters = self.meta_transfer.solve(
                feats,
                torch.stack([m[1] for m in state.memory], dim=1),
                torch.stack([m[2] for m in state.memory], dim=1),
                iters,
                state.filters,
            )
            encoding = apply_filter(frame.target_input.unsqueeze(1), state.filters).squeeze(1)
        state.frames_seen += 1
        size = (frame.layers.layer1.shape[-2] * 4, frame.layers.layer1.shape[-1] * 4)
        logits = self.decoder(frame.decoding, encoding, size)
        if self.cfg.decoder.label_skip:
            coarse = self.feature_mining.label_readout(encoding)  # (K, 1, h16, w16)
            logits = logits + F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return logits, labels

    def forward(
        self, frames: Tensor, text: Tensor | Sequence[str], label_logits: bool = False,
        previous: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Clip forward (training and offline inference).

        Args:
            frames: ``(B / r, T, 3, H, W)`` normalised, frames in temporal order; each clip serves r ≥ 1
                consecutive expressions (r = 1: one clip per expression; r = 2 in training with
                ``data.pair_expressions``, whose two clips of a pair are the same frames), so the image
                encoder runs once per clip.
            text: B strings or ``(B, 3, C)`` from :meth:`encode_text`.
            label_logits: also return the readout of Y (``feature_mining.label_readout``) for deep supervision.
            previous: with motion-aware feature mining over W frames, ``(B / r, T, P, 3, H, W)`` normalised:
                the P = W − 1 video frames before each frame of ``frames``, oldest first (``data.motion_history``,
                ours). Each frame's motion map then compares it with them, as streaming the whole video does,
                instead of with the clip's frames before it; they go through the image encoder up to layer2
                and nothing else. None: the clip's frames are the past of each other, as in streaming.

        Returns:
            logits ``(B, T, 1, H, W)``; with ``label_logits`` also ``(B, T, 1, h16, w16)``.
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise InputError(f"frames: expected (B, T, 3, H, W) normalised RGB, got shape {tuple(frames.shape)}")
        state = self.start(text)
        if state.text.shape[0] % frames.shape[0]:
            raise InputError(f"text: {state.text.shape[0]} expressions for {frames.shape[0]} clips (expected "
                             "a multiple: each clip serves the same number of consecutive expressions)")
        repeat = state.text.shape[0] // frames.shape[0]
        if previous is not None:
            self._check_previous(frames, previous)
        steps = []
        for t in range(frames.shape[1]):
            if previous is not None:  # the ring buffer holds frame t's own past
                state.motion.clear()
                for k in range(previous.shape[2]):  # N images per call, as streaming encodes them: the same bits
                    layer2 = self.image_encoder.until_layer2(previous[:, t, k])
                    self.feature_mining.motion.remember(layer2.repeat_interleave(repeat, dim=0), state.motion)
            steps.append(self._step(self.frame_features(frames[:, t], state, repeat), state))
        logits = torch.stack([out for out, _ in steps], 1)
        if not label_logits:
            return logits
        return logits, torch.stack([self.feature_mining.label_readout(labels) for _, labels in steps], 1)


    def _check_previous(self, frames: Tensor, previous: Tensor) -> None:
        """:meth:`forward`'s ``previous`` must be ``(N, T, P, 3, H, W)`` for ``frames (N, T, 3, H, W)``,
        P = window − 1."""
        window = self.cfg.fm.motion.window
        if not window:
            raise InputError("previous: only a model with motion-aware feature mining (model.fm.motion.window "
                             ">= 2) takes the frames before each frame")
        expected = (*frames.shape[:2], window - 1, *frames.shape[2:])
        if tuple(previous.shape) != expected:
            raise InputError(f"previous: expected shape {expected} (the W − 1 = {window - 1} frames before each "
                             f"frame), got {tuple(previous.shape)}")


def build_model(cfg: DictConfig, load_pretrained: bool = True) -> YOFO:
    """Build YOFO from a model config (``load_config(...).model``)."""
    return YOFO(cfg, load_pretrained=load_pretrained)
