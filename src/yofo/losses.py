"""Lovász losses for binary segmentation (Berman et al., CVPR 2018; brief §4).

Equal in value and gradient to the reference ``lovasz_losses.py`` (bermanmaxim/LovaszSoftmax, also copied in
pytracking): :func:`lovasz_hinge` is its ``lovasz_hinge`` and :func:`lovasz_sigmoid` its
``lovasz_softmax(sigmoid(logits), labels, classes=[1])``. Unlike the reference, all images are ranked in one
batched sort instead of a Python loop.

An "image" is one ``(H, W)`` map: logits of shape ``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, T, 1, H, W)`` hold
B, B and B·T images. Labels have the same shape with values in {0, 1} (float, int or bool).
"""

from __future__ import annotations

import torch
from torch import Tensor

from yofo.errors import InputError


def _images(logits: Tensor, labels: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten to ``(N, H·W)`` rows, one per image: logits, foreground (bool) and validity (bool)."""
    if logits.shape != labels.shape or logits.dim() < 2:
        raise InputError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be equal (..., H, W)")
    if valid is not None and valid.shape != logits.shape:
        raise InputError(f"valid mask {tuple(valid.shape)} must have the logits shape {tuple(logits.shape)}")
    pixels = logits.shape[-2] * logits.shape[-1]
    valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid.bool()
    return logits.reshape(-1, pixels), (labels == 1).reshape(-1, pixels), valid.reshape(-1, pixels)


def _lovasz_rows(errors: Tensor, foreground: Tensor, valid: Tensor) -> Tensor:
    """Lovász extension of the Jaccard loss, one value per row (brief §4.1).

    Each row is sorted by decreasing error with invalid pixels moved to the end, so that every cumulative sum
    over the valid prefix is the one of the valid pixels alone; past that prefix the errors are masked out.
    A row without valid pixels gives 0 with zero gradient, as the reference. The sort key is detached: the
    permutation is a constant of the gradient, as in the reference.

    Args:
        errors: ``(N, P)`` errors, differentiable.
        foreground: ``(N, P)`` bool ground truth.
        valid: ``(N, P)`` bool.

    Returns:
        ``(N,)`` losses ⟨errors sorted, lovasz_grad(ground truth sorted)⟩.
    """
    key = errors.detach().masked_fill(~valid, float("-inf"))
    order = key.argsort(dim=1, descending=True)
    errors_sorted = errors.gather(1, order)
    valid_sorted = valid.gather(1, order)
    # Pixel counts in at least float32 (exact up to 2^24 pixels), also when the errors are half precision.
    fg_sorted = (foreground & valid).gather(1, order).to(torch.promote_types(errors.dtype, torch.float32))
    n_fg = fg_sorted.sum(dim=1, keepdim=True)
    intersection = n_fg - fg_sorted.cumsum(dim=1)
    union = n_fg + (1.0 - fg_sorted).cumsum(dim=1)  # ≥ 1 from the first position on: never 0 / 0
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (errors_sorted.masked_fill(~valid_sorted, 0.0) * grad).sum(dim=1)


def lovasz_hinge(logits: Tensor, labels: Tensor, per_image: bool = True, ignore: int | None = None) -> Tensor:
    """Binary Lovász hinge loss (brief §4.2).

    Errors are 1 − logit·(2·label − 1), passed through ReLU and ranked per image (``per_image=True``, then
    averaged over images, an image with only ignored pixels counting as 0) or over the whole batch.

    Args:
        logits: ``(..., H, W)`` raw scores.
        labels: same shape, {0, 1}, or ``ignore`` for pixels to leave out.
        per_image: rank each image separately and average, or pool all pixels into one ranking.
        ignore: label value of pixels to leave out.

    Returns:
        scalar loss.
    """
    valid = None if ignore is None else labels != ignore
    logits, foreground, valid = _images(logits, labels, valid)
    if not per_image:
        logits, foreground, valid = logits.reshape(1, -1), foreground.reshape(1, -1), valid.reshape(1, -1)
    signs = 2.0 * foreground.to(logits.dtype) - 1.0
    # The reference ranks the errors before the ReLU. Ranking after it only reorders the zero errors, which
    # come last either way and add nothing to the value or the gradient.
    errors = torch.relu(1.0 - logits * signs)
    return _lovasz_rows(errors, foreground, valid).mean()


def lovasz_sigmoid(
    logits: Tensor, labels: Tensor, per_image: bool = False, valid: Tensor | None = None
) -> Tensor:
    """Lovász-Sigmoid loss: the reference ``lovasz_softmax(sigmoid(logits), labels, classes=[1])`` (brief §4.3).

    Errors are |label − sigmoid(logit)|. With the explicit class list of the reference, an image (or batch)
    without foreground is not skipped: its loss is its largest error.

    Args:
        logits: ``(..., H, W)`` raw scores; the sigmoid is applied here.
        labels: same shape, {0, 1}.
        per_image: rank each image separately and average (an image with no valid pixel counting as 0), or
            pool all pixels into one ranking (LWL's choice, the default).
        valid: optional mask, same shape; 0 / False marks pixels to leave out (the reference's ``ignore``).

    Returns:
        scalar loss.
    """
    logits, foreground, valid = _images(logits, labels, valid)
    if not per_image:
        logits, foreground, valid = logits.reshape(1, -1), foreground.reshape(1, -1), valid.reshape(1, -1)
    errors = (foreground.to(logits.dtype) - torch.sigmoid(logits)).abs()
    return _lovasz_rows(errors, foreground, valid).mean()


def segmentation_loss(
    logits: Tensor, labels: Tensor, valid: Tensor | None = None, weight: float = 100.0, bce_weight: float = 0.0
) -> Tensor:
    """Training loss: ``weight`` × (Lovász-Sigmoid over the pooled batch + ``bce_weight`` × binary cross-entropy).

    The Lovász part is LWL's "Lovász segmentation loss" with its factor 100 (brief §4.3), all pixels of the
    batch in one ranking. The paper uses it alone (``bce_weight = 0``). A model trained from scratch needs the
    cross-entropy term: while it cannot yet tell objects apart, p = 0.5 everywhere is a plateau of the
    Lovász-Sigmoid loss it does not leave (Berman et al. also start from cross-entropy).

    Args:
        logits: ``(..., H, W)`` mask logits, e.g. ``(B, T, 1, H, W)``.
        labels: same shape, {0, 1}.
        valid: optional mask, same shape; 0 / False marks pixels to leave out.
        weight: loss factor.
        bce_weight: weight of the mean per-pixel binary cross-entropy over valid pixels.

    Returns:
        scalar loss.
    """
    loss = lovasz_sigmoid(logits, labels, per_image=False, valid=valid)
    if bce_weight:
        keep = torch.ones_like(logits) if valid is None else valid.to(logits.dtype)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
        loss = loss + bce_weight * (bce * keep).sum() / keep.sum().clamp_min(1)
    return weight * loss


def label_loss(label_logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    """Deep supervision of the target labels Y: binary cross-entropy of their 1×1 readout at Y's grid.

    The mask and the valid map are area-averaged to the readout's grid, so a cell's target is the fraction of
    it the object covers and its weight the fraction that is valid.

    Args:
        label_logits: ``(B, T, 1, h, w)`` readout of Y (:meth:`yofo.model.yofo.YOFO.forward` with ``label_logits``).
        labels: ``(B, T, 1, H, W)`` masks in {0, 1}.
        valid: optional ``(B, T, 1, H, W)``; 0 marks pixels to leave out.

    Returns:
        scalar, the valid-weighted mean over cells.
    """
    size = label_logits.shape[-2:]

    def area(x: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(x.flatten(0, 1).to(label_logits.dtype), size=size, mode="area")

    weight = area(valid) if valid is not None else torch.ones_like(label_logits.flatten(0, 1))
    target = area(labels * valid if valid is not None else labels) / weight.clamp_min(1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        label_logits.flatten(0, 1), target.clamp(0, 1), reduction="none"
    )
    return (bce * weight).sum() / weight.sum().clamp_min(1e-6)
