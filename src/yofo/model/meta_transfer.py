"""Meta-Transfer (paper §3.3, Eq. 1): learn a target-specific linear conv θ from image features alone.

For the memory M of the last N frames, θ minimises

    L(θ) = Σ_k ‖W_k ⊙ (T(X_k; θ) − Y_k)‖² + λ‖θ‖²,        T(X; θ) = conv3x3(X, θ), no bias,

with X = Φ(layer3) (3×3 conv 1024→512 without bias + InstanceL2Norm, LWL's target model input, brief §2.1,
§7.3), Y and W from feature mining, and λ = ρ² with ρ learnable, initialised to 0.01 (brief §2.2). θ is found
by Gauss-Newton steepest descent with the exact step length (brief §2.3), unrolled and differentiated, so
the segmentation loss trains feature mining, Φ and ρ through the solver ("learning to learn").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_weight

from yofo.errors import InputError


def apply_filter(feats: Tensor, filters: Tensor) -> Tensor:
    """T(X; θ) for every sample: ``feats (Bf, S, C, H, W)``, ``filters (B, D, C, k, k)`` -> ``(B, S, D, H, W)``.

    ``Bf`` is B (one feature set per filter) or 1 (features shared by all B filters, e.g. K expressions
    of one video): the shared case is a single dense convolution with B·D output channels.
    """
    batch, dim, channels, k, _ = filters.shape
    shared, samples = feats.shape[0] == 1, feats.shape[1]
    height, width = feats.shape[-2:]
    weight = filters.reshape(batch * dim, channels, k, k)
    if shared:
        out = F.conv2d(feats[0], weight, padding=k // 2)
    else:
        out = F.conv2d(feats.transpose(0, 1).reshape(samples, batch * channels, height, width), weight,
                       padding=k // 2, groups=batch)
    return out.view(samples, batch, dim, height, width).transpose(0, 1)


def _apply_transpose(feats: Tensor, residuals: Tensor, filter_shape: torch.Size) -> Tensor:
    """Tᵀ: the gradient of Σ⟨R, T(X; θ)⟩ with respect to θ; ``residuals (B, S, D, H, W)`` -> ``(B, D, C, k, k)``."""
    batch, dim, channels, k, _ = filter_shape
    shared, samples = feats.shape[0] == 1, feats.shape[1]
    height, width = feats.shape[-2:]
    grad_out = residuals.transpose(0, 1).reshape(samples, batch * dim, height, width)
    if shared:
        inputs, groups = feats[0], 1
    else:
        inputs, groups = feats.transpose(0, 1).reshape(samples, batch * channels, height, width), batch
    grad = conv2d_weight(inputs, (batch * dim, channels, k, k), grad_out, padding=k // 2, groups=groups)
    return grad.view(filter_shape)


def solve_filter(
    feats: Tensor,
    labels: Tensor,
    weights: Tensor,
    reg: float | Tensor,
    num_iters: int,
    init: Tensor | None = None,
    filter_size: int = 3,
) -> tuple[Tensor, Tensor]:
    """Minimise Eq. (1) by steepest descent with the exact step length.

    Each iteration takes g = Tᵀ(W² ⊙ (T(X;θ) − Y)) + λθ (the gradient of L/2) and the step
    α = ‖g‖² / ‖J g‖², with ‖J g‖² = Σ_k ‖W_k ⊙ T(X_k; g)‖² + λ‖g‖², the exact minimiser of L along −g
    for this linear least-squares problem. α is 0 when g = 0 (no NaN for W = 0 or a solved problem).
    Everything is differentiable; nothing is detached.

    Args:
        feats: ``(B, S, C, H, W)`` target-model inputs of the S memory samples (``B = 1``: shared by all filters).
        labels: ``(B, S, D, H, W)`` regression targets Y.
        weights: ``(B, S, D, H, W)`` element-wise weights W.
        reg: λ, a float or a ``(B,)`` tensor.
        num_iters: steepest-descent iterations (0 returns ``init``).
        init: ``(B, D, C, k, k)`` starting filter; zeros when None.
        filter_size: k, used when ``init`` is None.

    Returns:
        ``filter (B, D, C, k, k)`` and ``losses (num_iters + 1, B)``: L at every iterate, the initial one first.
    """
    if feats.dim() != 5 or labels.dim() != 5 or labels.shape != weights.shape:
        raise InputError(
            f"solve_filter: feats must be (B, S, C, H, W) and labels/weights (B, S, D, H, W) of equal shape; "
            f"got {tuple(feats.shape)}, {tuple(labels.shape)}, {tuple(weights.shape)}"
        )
    if feats.shape[0] not in (1, labels.shape[0]) or feats.shape[1] != labels.shape[1] \
            or feats.shape[-2:] != labels.shape[-2:]:
        raise InputError(f"solve_filter: feats {tuple(feats.shape)} do not match labels {tuple(labels.shape)}")
    batch, _, dim = labels.shape[:3]
    channels = feats.shape[2]
    if init is None:
        init = feats.new_zeros(batch, dim, channels, filter_size, filter_size)
    reg = torch.as_tensor(reg, dtype=feats.dtype, device=feats.device).expand(batch)
    reg_f = reg.view(batch, 1, 1, 1, 1)
    filters = init
    weights_sq = weights * weights
    # T is linear, so T(θ − αg) = T(θ) − α T(g): one convolution per iteration besides Tᵀ
    prediction = apply_filter(feats, filters)
    losses = []
    for it in range(num_iters + 1):
        error = prediction - labels
        losses.append((weights_sq * error * error).sum(dim=(1, 2, 3, 4)) + reg * (filters * filters).sum(dim=(1, 2, 3, 4)))
        if it == num_iters:
            break
        grad = _apply_transpose(feats, weights_sq * error, filters.shape) + reg_f * filters
        grad_prediction = apply_filter(feats, grad)
        grad_sq = (grad * grad).sum(dim=(1, 2, 3, 4))
        jg_sq = (weights_sq * grad_prediction * grad_prediction).sum(dim=(1, 2, 3, 4)) + reg * grad_sq
        alpha = (grad_sq / jg_sq.clamp_min(1e-8)).view(batch, 1, 1, 1, 1)
        filters = filters - alpha * grad
        prediction = prediction - alpha * grad_prediction
    return filters, torch.stack(losses)


class InstanceL2Norm(nn.Module):
    """Per-sample L2 normalisation to squared norm ``scale² · C·H·W`` (LWL, brief §2.1): ``(N,C,H,W)`` -> same."""

    def __init__(self, scale: float, eps: float = 1e-5):
        super().__init__()
        self.scale, self.eps = scale, eps

    def forward(self, x: Tensor) -> Tensor:
        numel = x.shape[1] * x.shape[2] * x.shape[3]
        return x * (self.scale * torch.sqrt(numel / ((x * x).sum(dim=(1, 2, 3), keepdim=True) + self.eps)))


class MetaTransfer(nn.Module):
    """Φ and the learnable regulariser ρ of Eq. (1); :func:`solve_filter` does the optimisation.

    Args:
        in_channels: channels of layer3.
        feature_dim: channels of Φ (512 in LWL).
        filter_size: k of the 3×3 transfer conv.
        reg_init: initial ρ (λ = ρ²).
        motion_channels: with motion-aware feature mining (ours), the motion map's channels, which Φ then
            also reads (a 3×3 conv initialised to zero, so Φ starts as the paper's); 0: Φ reads layer3 alone.
    """

    def __init__(self, in_channels: int, feature_dim: int = 512, filter_size: int = 3, reg_init: float = 0.01,
                 motion_channels: int = 0):
        super().__init__()
        self.filter_size = filter_size
        self.phi = nn.Conv2d(in_channels, feature_dim, 3, padding=1, bias=False)
        nn.init.normal_(self.phi.weight, 0.0, math.sqrt(2.0 / (9 * feature_dim)))
        self.phi_motion = nn.Conv2d(motion_channels, feature_dim, 3, padding=1, bias=False) if motion_channels else None
        if self.phi_motion is not None:
            nn.init.zeros_(self.phi_motion.weight)
        self.norm = InstanceL2Norm(math.sqrt(1.0 / (feature_dim * filter_size * filter_size)))
        self.reg = nn.Parameter(torch.tensor(float(reg_init)))

    def features(self, layer3: Tensor, motion: Tensor | None = None) -> Tensor:
        """Φ: ``layer3 (N, C3, H/16, W/16)`` -> ``(N, feature_dim, H/16, W/16)``.

        ``motion (N, C, h8, w8)``: the motion map, required when built with ``motion_channels``; resized to
        layer3's grid.
        """
        x = self.phi(layer3)
        if self.phi_motion is not None:
            if motion.shape[-2:] != x.shape[-2:]:
                motion = F.interpolate(motion, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.phi_motion(motion)
        return self.norm(x)

    def solve(self, feats: Tensor, labels: Tensor, weights: Tensor, num_iters: int, init: Tensor | None) -> Tensor:
        """θ for the memory: shapes as in :func:`solve_filter`; returns ``(B, D, C, k, k)``."""
        filters, _ = solve_filter(feats, labels, weights, self.reg * self.reg, num_iters, init, self.filter_size)
        return filters
