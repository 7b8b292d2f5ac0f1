"""Cross-modal feature mining (paper §3.2, Fig. 3): image + language features -> target Y and weight W.

Scales i = 1, 2, 3 use X_1 = layer2 (s8), X_2 = layer3 (s16), X_3 = layer4 (s32; s16 with a dilated layer4,
``model.image_encoder.output_stride=16``) and z_1..z_3 (brief §7.1).

* ``multiscale`` (Fig. 3b, the paper's FM): B_i = F(X_i, z_i) at every scale;
  B̂_1 = conv_s1(B_1), B̂_i = conv_si([B_i, B̂_{i-1}]).
* ``baseline`` (Fig. 3a, "FM-baseline"): language is fused once, at the finest scale; the coarser scales add
  image features only: B̂_1 = conv_s1(F(X_1, z_1)), B̂_i = conv_si([V_i, B̂_{i-1}]).
* ``single_scale`` ("FM-SS"): only the coarsest scale, B̂_3 = conv_s3(F(X_3, z_3)).

Strides default to (2, 2, 1), so B̂_3 sits at s32 (brief §7.2; the literal (2, 2, 2) gives s64). Y and W come
from two 3×3 heads on B̂_3 (LWL's label/weight heads, brief §2.5: Y with ReLU; W initialised to exactly 1)
and are resized bilinearly to the target model's grid (s16). ``label_readout`` (1×1, Y -> one mask logit) is
not part of the paper's network: it serves the training's optional deep supervision of Y
(``train.aux_weight``, :func:`yofo.losses.label_loss`) and ``model.decoder.label_skip`` (ours,
:mod:`yofo.model.yofo`).

Motion-aware feature mining (ours, ``motion_window >= 2``; :mod:`yofo.model.motion`): a motion map of the last
W frames' layer2 joins the image side of every fusion block's multi-modal map, in every mode.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yofo.model.fusion import FusionBlock, conv_bn_relu, init_conv_weights, l2_normalize
from yofo.model.motion import MotionFeatures

MODES = ("multiscale", "baseline", "single_scale")


def _expand(x: Tensor, batch: int) -> Tensor:
    """Broadcast a per-frame tensor of batch 1 to ``batch`` (a view, no copy)."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] != batch else x


class FeatureMining(nn.Module):
    """Multi-scale cross-modal feature mining producing (Y, W).

    Args:
        in_channels: channels of (layer2, layer3, layer4).
        dim: fusion width C.
        key_dim: ACM key/value width.
        pool_sizes: ACM PSP sizes.
        target_dim: D, channels of Y and W.
        mode: ``multiscale``, ``baseline`` or ``single_scale``.
        fusion: ``aca`` or ``concat``.
        strides: strides of the convolutions producing B̂_1, B̂_2, B̂_3.
        motion_window: W >= 2 turns motion-aware feature mining on over the last W frames; 0 off (paper).
        motion_radius: displacement the motion map's cost volume searches each way, in s8 cells.
        text_film: the sentence scales the image side of every multi-modal map (ours, :class:`FusionBlock`).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        dim: int,
        key_dim: int,
        pool_sizes: Sequence[int],
        target_dim: int,
        mode: str = "multiscale",
        fusion: str = "aca",
        strides: Sequence[int] = (2, 2, 1),
        motion_window: int = 0,
        motion_radius: int = 3,
        text_film: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        fused = {"multiscale": (0, 1, 2), "baseline": (0,), "single_scale": (2,)}[mode]
        scales = (2,) if mode == "single_scale" else (0, 1, 2)
        self.scales = scales
        self.fuse = nn.ModuleDict(
            {str(i): FusionBlock(in_channels[i], dim, key_dim, pool_sizes, fusion, motion_window > 0, text_film)
             for i in fused}
        )
        self.motion = MotionFeatures(dim, motion_window, motion_radius) if motion_window else None
        # FM-baseline: the coarser scales contribute image features only (same projection as V_i)
        self.image_only = nn.ModuleDict(
            {str(i): conv_bn_relu(in_channels[i], dim, 1) for i in scales if str(i) not in self.fuse}
        )
        self.down = nn.ModuleDict(
            {str(i): conv_bn_relu(dim if i == scales[0] else 2 * dim, dim, 3, strides[i]) for i in scales}
        )
        self.label_head = nn.Conv2d(dim, target_dim, 3, padding=1)
        self.weight_head = nn.Conv2d(dim, target_dim, 3, padding=1)
        self.label_readout = nn.Conv2d(target_dim, 1, 1)
        init_conv_weights(self)
        nn.init.zeros_(self.weight_head.weight)  # W ≡ 1 at initialisation (LWL, brief §2.5)
        nn.init.ones_(self.weight_head.bias)
        for block in self.fuse.values():  # motion enters at zero: training starts from the paper's function
            if block.mm_motion is not None:
                nn.init.zeros_(block.mm_motion.weight)

    def motion_map(self, layer2: Tensor, history: deque | None = None) -> Tensor | None:
        """The motion map ``(N, C, h8, w8)`` of a frame's ``layer2 (N, C2, h8, w8)``; None without motion.

        ``history``: the stream's ring buffer of past layer2 maps (updated in place); None treats the frame as
        a video's first (no motion seen), as for single images.
        """
        if self.motion is None:
            return None
        return self.motion(layer2, deque(maxlen=self.motion.window) if history is None else history)

    def image_part(self, features: Sequence[Tensor], motion: Tensor | None = None) -> dict[str, object]:
        """Per-frame work on ``(layer2, layer3, layer4)``, each ``(N, C_i, H_i, W_i)``; shared by all expressions.

        ``motion``: the frame's :meth:`motion_map`, required with motion-aware feature mining.
        """
        part: dict[str, object] = {}
        for i in self.scales:
            key = str(i)
            if key in self.fuse:
                part[key] = self.fuse[key].image_part(features[i], motion)
            else:
                part[key] = l2_normalize(self.image_only[key](features[i]))
        return part

    def forward(self, image: dict[str, object], text: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Per-expression work.

        Args:
            image: output of :meth:`image_part` with batch 1 (shared) or B.
            text: ``(B, 3, C)``, z_1..z_3.
            size: ``(h, w)`` of the target model's grid (s16).

        Returns:
            Y ``(B, D, h, w)`` (non-negative) and W ``(B, D, h, w)``.
        """
        batch = text.shape[0]
        previous = None
        for i in self.scales:
            key = str(i)
            if key in self.fuse:
                b = self.fuse[key](image[key], text[:, i])
            else:
                b = image[key]
            b = _expand(b, batch)
            if previous is not None:
                if previous.shape[-2:] != b.shape[-2:]:  # only with non-default strides
                    previous = F.interpolate(previous, size=b.shape[-2:], mode="bilinear", align_corners=False)
                b = torch.cat([b, previous], dim=1)
            previous = self.down[key](b)
        labels = F.relu(self.label_head(previous))
        weights = self.weight_head(previous)
        if labels.shape[-2:] != tuple(size):
            labels = F.interpolate(labels, size=size, mode="bilinear", align_corners=False)
            weights = F.interpolate(weights, size=size, mode="bilinear", align_corners=False)
        return labels, weights
