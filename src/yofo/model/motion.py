"""Motion-aware feature mining (ours, beyond the paper): a cross-frame image signal for the fusion blocks.

YOFO's feature mining sees one frame at a time, so a motion word ("the shape moving left", "the object that
does not move") cannot pick an object. With ``model.fm.motion.window = W >= 2`` each frame's layer2 (s8) is
projected to a few channels, P_t = ConvBNReLU1x1(layer2_t), and the last W projections are kept in a ring
buffer (a constant-size streaming state, whatever the video length). The motion map is

    Mo_t = L2N(ConvBNReLU3x3([P_t, P_t − P_{t−1}, ..., P_t − P_{t−W+1}]))     (N, C, h8, w8)

a short causal temporal convolution written on differences, so that a still scene gives the same input
as a single frame; the 3×3 kernel sees where a difference is positive and where negative around an edge,
hence the direction. Before frame W−1 the missing past repeats the video's first frame (replicate padding).
L2N (per position, over channels) puts Mo_t on the scale of the fusion's image feature V_i, which is
L2-normalised too. Without it, on the frozen EfficientNet-Lite0, |Mo_t| was about 14 against 1 for V_i:
Adam's steps on W_mo then grew the motion term about 14 times faster, and after 3600 steps it outweighed
the image term (|W_mo Mo| 1.9–2.6 against |W_v V| 1.5–1.7). Appearance sentences fell from J&F 0.544
to 0.342 (checkpoints/README.md).
Mo_t is computed once per frame and shared by every sentence; each fusion block adds ``W_mo Mo_t`` (1×1,
initialised to zero, so training starts from the paper's function) to the image side of its multi-modal
map M_i, where the sentence's ``W_z z_i`` joins it: the language stream of ACM (and FM-Cat's output) then
carries motion and language together. Off (``window = 0``) in ``paper.yaml`` and by default.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor, nn

from yofo.model.fusion import conv_bn_relu, l2_normalize


class MotionFeatures(nn.Module):
    """Per-frame projection and the cross-frame motion map of the last ``window`` frames.

    Args:
        in_channels: channels of layer2.
        channels: channels of the projection P kept per frame in the ring buffer.
        out_channels: channels of the motion map (the fusion width C).
        window: W, frames the motion map looks at, the current one included (>= 2).
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int, window: int):
        super().__init__()
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self.project = conv_bn_relu(in_channels, channels, 1)
        self.mix = conv_bn_relu(window * channels, out_channels, 3)

    def forward(self, layer2: Tensor, history: deque) -> Tensor:
        """Motion map of the current frame: ``layer2 (N, C2, h8, w8)`` -> ``(N, C, h8, w8)``.

        ``history`` (a ``deque(maxlen=window)``, the stream's ring buffer) receives the current projection.
        """
        history.append(self.project(layer2))
        past = list(history)
        past = [past[0]] * (self.window - len(past)) + past  # replicate the first frame before the video
        current = past[-1]
        return l2_normalize(self.mix(torch.cat([current] + [current - p for p in reversed(past[:-1])], dim=1)))
