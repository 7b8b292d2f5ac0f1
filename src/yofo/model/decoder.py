"""Segmentation decoder: LWL's decoder (brief §2.6) from the D-channel encoding to full-resolution logits.

Stages run layer4 -> layer1 with widths 4m, 2m, 2m, m (m = 64 in LWL). Each stage: TSE (reduce the backbone
feature, concatenate the resized encoding, three 3×3 convs), RRB, CAB (channel gate from the deeper stage),
RRB. Then bicubic ×2, 3×3 conv + ReLU, bicubic to the input size, 3×3 conv to one logit.

The first 3×3 conv of TSE acts on [h, s] (h: reduced backbone feature, s: encoding); it is written as
conv(h) + conv(s), the same function, so that conv(h), like ``reduce``, is computed once per frame
(:meth:`Decoder.image_part`) and shared by every expression; the rest runs per expression.

In eval mode the last two operations, bicubic upsampling of the m/2-channel map to the input size and the
3×3 ``out_conv`` to one logit, run in the cheaper order of :func:`upsampled_conv`: the same function, with
k² channels upsampled instead of m/2 (at 384×640 the decoder's per-sentence part got about a quarter
faster). Training keeps the literal order, so published checkpoints reproduce bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yofo.model.fusion import init_conv_weights


def _conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def _gap(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1)


def upsampled_conv(x: Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> Tensor:
    """``conv(bicubic(x, size))`` for a single-output, stride-1, "same"-padded ``conv``, upsampling k² channels.

    Bicubic resizing acts on each channel alike and linearly, so it commutes with mixing channels: each of
    the k² kernel taps first mixes ``x``'s channels into one map at low resolution (a 1×1 conv), the k² maps
    are upsampled, and a fixed one-hot k×k conv adds them, each shifted by its tap (zero padding as ``conv``).

    Args:
        x: ``(B, C, h, w)``.
        conv: ``C -> 1`` convolution, kernel k×k (odd), padding k // 2.
        size: output ``(H, W)``.

    Returns:
        ``(B, 1, H, W)``, equal to ``conv(F.interpolate(x, size, mode="bicubic"))`` up to float rounding.
    """
    k = conv.kernel_size[0]
    taps = conv.weight[0].permute(1, 2, 0).reshape(k * k, -1, 1, 1)  # tap (p, q) -> row p·k + q
    shifts = torch.eye(k * k, dtype=x.dtype, device=x.device).view(1, k * k, k, k)
    upsampled = F.interpolate(F.conv2d(x, taps), size=size, mode="bicubic", align_corners=False)
    return F.conv2d(upsampled, shifts, conv.bias, padding=k // 2)


class TSE(nn.Module):
    """Target segmentation encoder: fuses a backbone feature with the resized encoding ``s``."""

    def __init__(self, feature_channels: int, encoding_channels: int, width: int):
        super().__init__()
        mixed = width + encoding_channels
        self.reduce = nn.Sequential(_conv(feature_channels, width, 1), nn.ReLU(inplace=True), _conv(width, width, 1))
        self.transform_image = _conv(width, mixed, 3)
        self.transform_encoding = _conv(encoding_channels, mixed, 3, bias=False)
        self.transform = nn.Sequential(
            nn.ReLU(inplace=True), _conv(mixed, mixed, 3), nn.ReLU(inplace=True), _conv(mixed, width, 3),
            nn.ReLU(inplace=True),
        )

    def image_part(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """``feature (N, C, h, w)`` -> reduced ``h (N, width, h, w)`` and its share of the first transform conv."""
        reduced = self.reduce(feature)
        return reduced, self.transform_image(reduced)

    def forward(self, transformed_image: Tensor, encoding: Tensor) -> Tensor:
        """``(1 or B, width+D, h, w)`` and ``encoding (B, D, h, w)`` -> ``(B, width, h, w)``."""
        return self.transform(transformed_image + self.transform_encoding(encoding))


class RRB(nn.Module):
    """Residual refinement block: 1×1 conv, then x + [3×3 conv, BN, ReLU, 3×3 conv], ReLU."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1x1 = _conv(width, width, 1)
        self.body = nn.Sequential(
            _conv(width, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=True), _conv(width, width, 3, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1x1(x)
        return F.relu(x + self.body(x))


class CAB(nn.Module):
    """Channel attention block: gate the shallow map with pooled deep+shallow context, add the deep map."""

    def __init__(self, width: int):
        super().__init__()
        self.gate = nn.Sequential(_conv(2 * width, width, 1), nn.ReLU(inplace=True), _conv(width, width, 1))

    def forward(self, deep: Tensor, shallow: Tensor) -> Tensor:
        """``deep (B, w, h', w')`` or ``(B, w, 1, 1)``, ``shallow (B, w, h, w)`` -> ``(B, w, h, w)``."""
        gate = torch.sigmoid(self.gate(torch.cat([_gap(shallow), _gap(deep)], dim=1)))
        return shallow * gate + F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)


class Decoder(nn.Module):
    """LWL decoder.

    Args:
        encoding_channels: D, channels of the transferred feature Ỹ.
        feature_channels: channels of (layer1, layer2, layer3, layer4).
        width: m; stage widths are 4m (layer4), 2m, 2m, m (layer1).
    """

    def __init__(self, encoding_channels: int, feature_channels: Sequence[int], width: int = 64):
        super().__init__()
        widths = (4 * width, 2 * width, 2 * width, width)  # layer4, layer3, layer2, layer1
        channels = tuple(reversed(tuple(feature_channels)))
        self.tse = nn.ModuleList(TSE(c, encoding_channels, w) for c, w in zip(channels, widths))
        self.proj = nn.ModuleList(
            nn.Sequential(_conv(widths[i - 1], widths[i], 1), nn.ReLU(inplace=True)) for i in range(1, 4)
        )
        self.rrb1 = nn.ModuleList(RRB(w) for w in widths)
        self.cab = nn.ModuleList(CAB(w) for w in widths)
        self.rrb2 = nn.ModuleList(RRB(w) for w in widths)
        self.up_conv = _conv(width, width // 2, 3)
        self.out_conv = _conv(width // 2, 1, 3)
        init_conv_weights(self)
        # Start at logit 0 (p = 0.5) everywhere: LWL's init gives logits of several units, whose sigmoid
        # saturates as soon as training pushes the (mostly background) pixels negative, and the Lovász-Sigmoid
        # loss then barely moves a model trained from scratch.
        nn.init.zeros_(self.out_conv.weight)

    def image_part(self, features: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per-frame work on ``(layer1, ..., layer4)``: for each stage (layer4 first) the TSE image terms."""
        return [tse.image_part(f) for tse, f in zip(self.tse, reversed(tuple(features)))]

    def forward(self, image: list[tuple[Tensor, Tensor]], encoding: Tensor, size: tuple[int, int]) -> Tensor:
        """Decode ``encoding (B, D, h16, w16)`` with :meth:`image_part` terms (batch 1 or B) -> logits ``(B, 1, H, W)``."""
        batch = encoding.shape[0]
        x = None
        for stage, (reduced, transformed) in enumerate(image):
            s = F.interpolate(encoding, size=reduced.shape[-2:], mode="bilinear", align_corners=False)
            h = self.tse[stage](transformed, s)
            if x is None:
                pooled = _gap(reduced)
                deep = pooled.expand(batch, *pooled.shape[1:]) if pooled.shape[0] != batch else pooled
            else:
                deep = self.proj[stage - 1](x)
            h = self.rrb1[stage](h)
            h = self.cab[stage](deep, h)
            x = self.rrb2[stage](h)
        x = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        x = F.relu(self.up_conv(x))
        if not self.training:
            return upsampled_conv(x, self.out_conv, size)
        return self.out_conv(F.interpolate(x, size=size, mode="bicubic", align_corners=False))
