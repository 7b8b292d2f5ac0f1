"""Motion-aware feature mining (ours, beyond the paper): a cross-frame image signal for the fusion blocks.

YOFO's feature mining sees one frame at a time, so a motion word ("the shape moving left", "the object that
does not move") cannot pick an object. With ``model.fm.motion.window = W >= 2`` each frame's layer2 (s8),
L2-normalised per position, A_t = L2N(layer2_t), is kept in a ring buffer of the last W frames (a
constant-size streaming state, whatever the video length). Against each earlier frame of the window the
current one is compared by a local correlation (a cost volume, as in optical-flow networks):

    C_k(p, d) = <A_t(p), A_{t−k}(p + d)>,   d ∈ [−r, r]²  (radius r = ``model.fm.motion.radius`` cells)
    D_k(p)    = Σ_d softmax_d(C_k(p, ·) / τ) · d                   soft-argmax: where p was k frames ago
    Mo_t      = L2N(ConvBNReLU3x3([C_1, D_1, ..., C_{W−1}, D_{W−1}]))                    (N, C, h8, w8)

so every position, the inside of an object as well as its edges (layer2's receptive field is wider than the
benchmark's objects), reads how far and which way the content under it moved, without learning to match
first. Before frame W−1 the missing past repeats the video's first frame (replicate padding), where the
correlation peaks at d = 0: a first frame looks still. τ = 0.02: cosine similarities of neighbouring s8
positions differ by about 0.1, which the softmax then weighs e^5 apart. On the synthetic benchmark, with the
frozen ImageNet EfficientNet-Lite0 and no training at all, D_1 averaged over each object's mask gives
−3.8 / +3.7 px per frame for left / right movers (s4 features) and −5.8 / +4.9 (s8), ~0.5 px for still ones.
L2N (per position, over channels) puts Mo_t on the scale of the fusion's image feature V_i, which is
L2-normalised too.
Mo_t is computed once per frame and shared by every sentence; each fusion block adds ``W_mo Mo_t`` (1×1,
initialised to zero, so training starts from the paper's function) to the image side of its multi-modal
map M_i, where the sentence's ``W_z z_i`` joins it: the language stream of ACM (and FM-Cat's output) then
carries motion and language together. The motion map also enters Φ, the Meta-Transfer solver's input
(:class:`yofo.model.meta_transfer.MetaTransfer`, a 3×3 conv initialised to zero): the mask comes from
θ applied to Φ, and θ is a convolution fit on Φ, so with Φ read from layer3 alone a target that differs
from a look-alike only by how it moves could not be told apart after the solver, whatever Y says.
Off (``window = 0``) in ``paper.yaml`` and by default.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yofo.model.fusion import conv_bn_relu, l2_normalize

TEMPERATURE = 0.02  # τ of the soft-argmax over the cost volume


def local_correlation(current: Tensor, past: Tensor, radius: int) -> Tensor:
    """Cost volume of two feature maps: ``(N, C, h, w)`` twice -> ``(N, (2r+1)², h, w)``.

    Channel ``(dy + r)(2r + 1) + (dx + r)`` holds ``<current(y, x), past(y + dy, x + dx)>`` (zero outside the
    frame), the mean over channels times C, i.e. the cosine similarity for L2-normalised inputs.
    """
    height, width = current.shape[-2:]
    padded = F.pad(past, (radius, radius, radius, radius))
    size = 2 * radius + 1
    return torch.stack(
        [(current * padded[:, :, dy:dy + height, dx:dx + width]).sum(1) for dy in range(size) for dx in range(size)],
        dim=1,
    )


def soft_argmax(cost: Tensor, radius: int, temperature: float = TEMPERATURE) -> Tensor:
    """Expected displacement under ``softmax(cost / τ)``: ``(N, (2r+1)², h, w)`` -> ``(N, 2, h, w)`` (dx, dy) in cells."""
    weights = torch.softmax(cost / temperature, dim=1)
    offsets = torch.arange(-radius, radius + 1, dtype=cost.dtype, device=cost.device)
    size = 2 * radius + 1
    dx = (weights * offsets.repeat(size).view(1, -1, 1, 1)).sum(1)
    dy = (weights * offsets.repeat_interleave(size).view(1, -1, 1, 1)).sum(1)
    return torch.stack([dx, dy], dim=1)


class MotionFeatures(nn.Module):
    """The cross-frame motion map of the last ``window`` frames.

    Args:
        out_channels: channels of the motion map (the fusion width C).
        window: W, frames the motion map looks at, the current one included (>= 2).
        radius: r, displacement searched each way, in cells of the feature map (s8).
    """

    def __init__(self, out_channels: int, window: int, radius: int = 3):
        super().__init__()
        if window < 2 or radius < 1:
            raise ValueError(f"window must be >= 2 and radius >= 1, got {window} and {radius}")
        self.window = window
        self.radius = radius
        self.mix = conv_bn_relu((window - 1) * ((2 * radius + 1) ** 2 + 2), out_channels, 3)

    def forward(self, layer2: Tensor, history: deque) -> Tensor:
        """Motion map of the current frame: ``layer2 (N, C2, h8, w8)`` -> ``(N, C, h8, w8)``.

        ``history`` (a ``deque(maxlen=window)``, the stream's ring buffer) receives ``L2N(layer2)``.
        """
        self.remember(layer2, history)
        past = list(history)
        past = [past[0]] * (self.window - len(past)) + past  # replicate the first frame before the video
        current = past[-1]
        maps = []
        for earlier in reversed(past[:-1]):  # 1, 2, ..., W−1 frames back
            cost = local_correlation(current, earlier, self.radius)
            maps += [cost, soft_argmax(cost, self.radius)]
        return l2_normalize(self.mix(torch.cat(maps, dim=1)))

    @staticmethod
    def remember(layer2: Tensor, history: deque) -> None:
        """Append ``L2N(layer2 (N, C2, h8, w8))`` to ``history``, as :meth:`forward` does for its frame: for a
        frame that is only the past of later ones (``data.motion_history``)."""
        history.append(l2_normalize(layer2))
