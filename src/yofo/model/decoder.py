"""Segmentation decoder: LWL's decoder (brief §2.6) from the D-channel encoding to full-resolution logits.

Stages run layer4 -> layer1 with widths 4m, 2m, 2m, m (m = 64 in LWL). Each stage: TSE (reduce the backbone
feature, concatenate the resized encoding, three 3×3 convs), RRB, CAB (channel gate from the deeper stage),
RRB. Then bicubic ×2, 3×3 conv + ReLU, bicubic to the input size, 3×3 conv to one logit.

The first 3×3 conv of TSE acts on [h, s] (h: reduced backbone feature, s: encoding); it is written as
conv(h) + conv(s), the same function, so that conv(h), like ``reduce``, is computed once per frame
(:meth:`Decoder.image_part`) and shared by every expression; the rest runs per expression.

In eval mode the output stage runs cheaper forms of the same function (up to float rounding); training keeps
the literal order, so published checkpoints reproduce bit for bit:

* both ×2 bicubic upsamplings are one depthwise transposed convolution (:func:`bicubic_up2`), several times
  faster on the CPU than ``F.interpolate(mode="bicubic")``;
* when m/2 > k², the upsampling of the m/2-channel map to the input size and the k×k ``out_conv`` to one logit
  run in the order of :func:`upsampled_conv`, with k² channels upsampled instead of m/2.
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


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel at distance ``t`` with PyTorch's ``a = −0.75``."""
    t = abs(t)
    return ((a + 2) * t - (a + 3)) * t * t + 1 if t <= 1 else ((a * t - 5 * a) * t + 8 * a) * t - 4 * a


# ×2 with align_corners=False: output 2i (source i − 1/4) weighs inputs i−2..i+1 by these; output 2i + 1 (source
# i + 1/4) weighs i−1..i+2 by them reversed. As one transposed-convolution kernel over the offsets −3..4 of
# the output from twice its input's index:
_EVEN = [_cubic(1.75), _cubic(0.75), _cubic(0.25), _cubic(1.25)]
_UP2_TAPS = (_EVEN[0], _EVEN[3], _EVEN[1], _EVEN[2], _EVEN[2], _EVEN[1], _EVEN[3], _EVEN[0])


def bicubic_up2(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)`` as a depthwise transposed conv.

    Each output pixel is a separable 4×4 combination of its input neighbours with one of two fixed weight
    sets (the output's parity), i.e. a stride-2 transposed convolution with an 8×8 kernel; replicating the
    border by two pixels first reproduces interpolate's clamped indices.

    Args:
        x: ``(B, C, h, w)``.

    Returns:
        ``(B, C, 2h, 2w)``, equal to bicubic interpolation up to float rounding.
    """
    channels, (height, width) = x.shape[1], x.shape[-2:]
    taps = x.new_tensor(_UP2_TAPS)
    kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 8, 8)
    out = F.conv_transpose2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, stride=2, groups=channels)
    return out[..., 7 : 7 + 2 * height, 7 : 7 + 2 * width]


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
    return F.conv2d(_bicubic(F.conv2d(x, taps), size), shifts, conv.bias, padding=k // 2)


def _bicubic(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resizing of ``x (B, C, h, w)`` to ``size``; through :func:`bicubic_up2` when that is ×2."""
    if tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1]):
        return bicubic_up2(x)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


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
        if self.training:  # the literal order
            x = F.relu(self.up_conv(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)))
            return self.out_conv(F.interpolate(x, size=size, mode="bicubic", align_corners=False))
        x = F.relu(self.up_conv(bicubic_up2(x)))
        if x.shape[1] > self.out_conv.kernel_size[0] ** 2:
            return upsampled_conv(x, self.out_conv, size)
        return self.out_conv(_bicubic(x, size))
