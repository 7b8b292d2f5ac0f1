"""Fusion block F(X_i, Z_i) of the feature-mining module: EFN asymmetric co-attention or concatenation.

Per scale i (brief §3.3):
    V_i = L2N(ConvBNReLU1x1(X_i))                                 image stream
    M_i = L2N(ReLU(BN(W_v V_i + W_z L2N(z_i) + W_c coord8)))      multi-modal map, the language stream
    B_i = ReLU(BN(Conv1x1([ctx_v, ctx_l]))) + M_i,  (ctx_v, ctx_l) = ACM(V_i, M_i)      fusion = "aca"
    B_i = M_i                                                                               fusion = "concat"
With ``text_film`` (ours, ``model.fm.text_film``; off in the paper) the sentence also scales the image side
of M_i per channel: W_v V_i + W_c coord8 (+ motion) becomes (W_v V_i + W_c coord8) ⊙ (1 + W_g L2N(z_i) + b_g).
A per-sentence bias alone is constant over the image, so its gradient sums dL/dM over every position, where
"more on this object" and "less on that one" cancel; the scale's gradient weighs each position by its image
feature, which is what lets a word pick the channels of a colour, a shape, a motion or a side. W_g and b_g
start at zero, so training starts from the paper's function.
A tiled [CLS] vector alone would make ACM's language path degenerate (a spatially constant map gives a
constant affinity that the softmax cancels, brief §3.3), hence the multi-modal map M_i as language stream.
``concat`` (FM-Cat) is the channel concatenation [V_i, Z_i, coord] followed by a 1×1 ConvBNReLU.
V_i uses a 1×1 conv (EFN: 3×3; the brief leaves the kernel open): at 384×640 a 3×3 projection of
layer2..layer4 to C = 256 costs ~16 GFLOPs per frame, about as much as the ResNet-50 itself, and ACM gives
every position global context anyway.

The 1×1 convolution over the concatenation is written as a sum of three projections, which is the same
function: the image terms are computed once per frame (:meth:`FusionBlock.image_part`) and shared by every
expression of the video; only ``W_z z_i`` and what follows it runs per expression.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FUSIONS = ("aca", "concat")


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, padding ``kernel_size // 2``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def l2_normalize(x: Tensor) -> Tensor:
    """L2 normalisation over channels (EFN's L2N): ``(N, C, H, W) -> (N, C, H, W)``."""
    return F.normalize(x, dim=1)


def coord_features(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """EFN's 8 coordinate channels ``(1, 8, H, W)``: x/y min, max, centre in [-1, 1], then 1/W and 1/H."""
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)
    x_min, x_max = xs / width * 2 - 1, (xs + 1) / width * 2 - 1
    y_min, y_max = ys / height * 2 - 1, (ys + 1) / height * 2 - 1
    rows = [t.view(1, width).expand(height, width) for t in (x_min, x_max, (x_min + x_max) / 2)]
    rows += [t.view(height, 1).expand(height, width) for t in (y_min, y_max, (y_min + y_max) / 2)]
    rows += [torch.full((height, width), 1 / width, device=device, dtype=dtype)]
    rows += [torch.full((height, width), 1 / height, device=device, dtype=dtype)]
    return torch.stack(rows).unsqueeze(0)


def pyramid_pool(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """PSP anchors: adaptive average pools to s×s for each size, flattened: ``(N, C, H, W) -> (N, C, Σ s²)``."""
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in sizes], dim=2)


class _Projection(nn.Module):
    """1×1 conv + BN + ReLU producing a query/key (``with_act``) or a plain 1×1 conv producing values."""

    def __init__(self, in_channels: int, out_channels: int, with_act: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=not with_act)]
        if with_act:
            layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class AsymmetricCoAttention(nn.Module):
    """EFN's ACM (brief §3.1): one softmax over A_v + A_l against 110 PSP-pooled anchors, applied to both streams.

    Args:
        dim: channels of both input streams and of the two outputs.
        key_dim: query/key and value width.
        pool_sizes: PSP sizes, (1, 3, 6, 8) gives 110 anchors.
    """

    def __init__(self, dim: int, key_dim: int, pool_sizes: Sequence[int] = (1, 3, 6, 8)):
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.scale = key_dim**-0.5
        self.query_v, self.key_v = _Projection(dim, key_dim, True), _Projection(dim, key_dim, True)
        self.query_l, self.key_l = _Projection(dim, key_dim, True), _Projection(dim, key_dim, True)
        self.value_v, self.value_l = _Projection(dim, key_dim, False), _Projection(dim, key_dim, False)
        self.out_v, self.out_l = nn.Conv2d(key_dim, dim, 1), nn.Conv2d(key_dim, dim, 1)

    def _stream(
        self, x: Tensor, query: nn.Module, key: nn.Module, value: nn.Module | None
    ) -> tuple[Tensor, Tensor | None]:
        q = query(x).flatten(2).transpose(1, 2)  # (N, HW, dk)
        k = pyramid_pool(key(x), self.pool_sizes)  # (N, dk, S)
        v = None if value is None else pyramid_pool(value(x), self.pool_sizes).transpose(1, 2)  # (N, S, dv)
        return torch.bmm(q, k) * self.scale, v

    def image_part(self, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Image-only terms, once per frame: ``visual (N, C, H, W)`` -> A_v ``(N, HW, S)``, values ``(N, S, dk)``."""
        return self._stream(visual, self.query_v, self.key_v, self.value_v)

    def forward(self, image: tuple[Tensor, Tensor], language: Tensor) -> tuple[Tensor, Tensor]:
        """``image`` from :meth:`image_part` (batch 1 or B), ``language (B, C, H, W)`` -> ctx_v, ctx_l ``(B, C, H, W)``."""
        affinity_v, value_v = image
        affinity_l, value_l = self._stream(language, self.query_l, self.key_l, self.value_l)
        attention = torch.softmax(affinity_v + affinity_l, dim=-1)  # (B, HW, S); image terms broadcast
        batch, _, height, width = language.shape

        def context(values: Tensor, out: nn.Module) -> Tensor:
            ctx = torch.matmul(attention, values).transpose(1, 2)  # (B, dv, HW)
            return out(ctx.reshape(batch, -1, height, width))

        return context(value_v, self.out_v), context(value_l, self.out_l)

    def mixed(self, image: tuple[Tensor, Tensor], language: Tensor, mix: nn.Module) -> Tensor:
        """``mix(cat[ctx_v, ctx_l])`` for a 1×1 convolution ``mix`` (2C -> C'), in a cheaper order.

        The value projections, ``out_v``/``out_l`` and ``mix`` act on each position alone and affinely, and
        every row of the attention sums to one, so they commute with the pooling and the attention: they run
        on the S anchors, and one product ``attention @ anchors`` replaces two attention products, two output
        convolutions and ``mix`` at every position. Same function as :meth:`forward` followed by ``mix``.

        Args:
            image: from :meth:`image_part` (batch 1 or B).
            language: ``(B, C, H, W)``.
            mix: a 1×1 convolution of the concatenated contexts.

        Returns:
            ``(B, C', H, W)``.
        """
        batch, _, height, width = language.shape

        def anchors(values: Tensor, out: nn.Module) -> Tensor:  # (N, S, dk) -> (N, C, S, 1)
            return out(values.transpose(1, 2).unsqueeze(-1))

        pooled = pyramid_pool(language, self.pool_sizes).unsqueeze(-1)  # (B, C, S, 1)
        value_l = self.value_l(pooled).squeeze(-1).transpose(1, 2)  # (B, S, dk)
        visual = anchors(image[1], self.out_v)
        mixed = mix(torch.cat([visual.expand(batch, *visual.shape[1:]), anchors(value_l, self.out_l)], dim=1))
        affinity_l, _ = self._stream(language, self.query_l, self.key_l, None)
        attention = torch.softmax(image[0] + affinity_l, dim=-1)  # (B, HW, S)
        out = torch.matmul(attention, mixed.squeeze(-1).transpose(1, 2))  # (B, HW, C')
        return out.transpose(1, 2).reshape(batch, -1, height, width)


class FusionBlock(nn.Module):
    """F(X_i, Z_i) for one scale, split into a per-frame image part and a per-expression part.

    Args:
        in_channels: channels of the image feature X_i.
        dim: fusion width C (the text features z_i arrive already projected to C).
        key_dim: ACM key/value width.
        pool_sizes: ACM PSP sizes.
        fusion: ``aca`` or ``concat``.
        motion: add a motion map (:mod:`yofo.model.motion`, width C) to the image side of M (ours, off in paper).
        text_film: the sentence scales the image side of M per channel (ours, off in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        key_dim: int,
        pool_sizes: Sequence[int],
        fusion: str = "aca",
        motion: bool = False,
        text_film: bool = False,
    ):
        super().__init__()
        self.visual = conv_bn_relu(in_channels, dim, 1)
        self.mm_visual = nn.Conv2d(dim, dim, 1, bias=False)
        self.mm_coord = nn.Conv2d(8, dim, 1, bias=False)
        self.mm_text = nn.Linear(dim, dim, bias=False)
        self.mm_norm = nn.BatchNorm2d(dim)
        self.mm_motion = nn.Conv2d(dim, dim, 1, bias=False) if motion else None
        self.mm_film = nn.Linear(dim, dim) if text_film else None
        if self.mm_film is not None:  # scale 1: training starts from the paper's function
            nn.init.zeros_(self.mm_film.weight)
            nn.init.zeros_(self.mm_film.bias)
        self.aca = AsymmetricCoAttention(dim, key_dim, pool_sizes) if fusion == "aca" else None
        self.merge = conv_bn_relu(2 * dim, dim, 1) if fusion == "aca" else None

    def image_part(self, x: Tensor, motion: Tensor | None = None) -> dict[str, Tensor | tuple[Tensor, Tensor]]:
        """Per-frame terms from ``x (N, C_in, H, W)``: V ``(N, C, H, W)`` and the image side of M and ACM.

        ``motion (N, C, h, w)``: the motion map when the block was built with ``motion``, resized to (H, W).
        """
        visual = l2_normalize(self.visual(x))
        coord = coord_features(x.shape[2], x.shape[3], x.device, x.dtype)
        mm_image = self.mm_visual(visual) + self.mm_coord(coord)
        if self.mm_motion is not None:
            if motion.shape[-2:] != x.shape[-2:]:
                motion = F.interpolate(motion, size=x.shape[-2:], mode="bilinear", align_corners=False)
            mm_image = mm_image + self.mm_motion(motion)
        part: dict[str, Tensor | tuple[Tensor, Tensor]] = {"visual": visual, "mm_image": mm_image}
        if self.aca is not None:
            part["aca"] = self.aca.image_part(visual)
        return part

    def forward(self, image: dict, z: Tensor) -> Tensor:
        """``image`` from :meth:`image_part` (batch 1 or B), ``z (B, C)`` -> B_i ``(B, C, H, W)``."""
        z = l2_normalize(z)
        text = self.mm_text(z).unsqueeze(-1).unsqueeze(-1)  # tiled by broadcasting
        mm_image = image["mm_image"]
        if self.mm_film is not None:
            mm_image = mm_image * (1 + self.mm_film(z).unsqueeze(-1).unsqueeze(-1))
        multimodal = l2_normalize(F.relu(self.mm_norm(mm_image + text)))
        if self.aca is None:
            return multimodal
        if not self.training:  # the same function in ACM's cheaper order (training keeps the literal one)
            conv, rest = self.merge[0], self.merge[1:]
            return rest(self.aca.mixed(image["aca"], multimodal, conv)) + multimodal
        ctx_v, ctx_l = self.aca(image["aca"], multimodal)
        return self.merge(torch.cat([ctx_v, ctx_l], dim=1)) + multimodal


def init_conv_weights(module: nn.Module) -> None:
    """LWL's initialisation of new convolutions: N(0, sqrt(2 / (k·k·out))), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
