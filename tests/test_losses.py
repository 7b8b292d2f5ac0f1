"""Lovász losses (yofo.losses) against a plain numpy reference of Berman et al.'s Algorithm 1 (brief §4), in
value and gradient (the analytic subgradient for the reference's sort order, and finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yofo.errors import InputError
from yofo.losses import label_loss, lovasz_hinge, lovasz_sigmoid, segmentation_loss

# ------------------------------------------------------------------------------------------ numpy reference


def ref_lovasz_grad(gt_sorted: np.ndarray) -> np.ndarray:
    """Jaccard loss increments along the ranking: grad_1 = J_1, grad_k = J_k − J_{k−1} (brief §4.1)."""
    total = gt_sorted.sum()
    grad, previous, fg_seen, bg_seen = [], 0.0, 0, 0
    for g in gt_sorted:
        fg_seen += g
        bg_seen += 1 - g
        jaccard = 1.0 - (total - fg_seen) / (total + bg_seen)
        grad.append(jaccard - previous)
        previous = jaccard
    return np.array(grad)


def ref_flat(logits: np.ndarray, fg: np.ndarray, hinge: bool) -> tuple[float, np.ndarray]:
    """Loss of one ranking and its subgradient w.r.t. the logits."""
    if len(logits) == 0:
        return 0.0, np.zeros(0)
    if hinge:
        signs = 2.0 * fg - 1.0
        errors = 1.0 - logits * signs
        d_errors = -signs * (errors > 0)  # d relu(e) / d logit
        errors = np.maximum(errors, 0.0)
    else:
        prob = 1.0 / (1.0 + np.exp(-logits))
        errors = np.abs(fg - prob)
        d_errors = np.where(fg == 1, -1.0, 1.0) * prob * (1.0 - prob)
    order = np.argsort(-errors, kind="stable")
    grad_sorted = ref_lovasz_grad(fg[order])
    d_logits = np.zeros(len(logits))
    d_logits[order] = grad_sorted * d_errors[order]
    return float(errors[order] @ grad_sorted), d_logits


def ref_loss(
    logits: np.ndarray, labels: np.ndarray, valid: np.ndarray, per_image: bool, hinge: bool
) -> tuple[float, np.ndarray]:
    """Reference loss and gradient; images are the (H, W) maps of the trailing two axes."""
    n_pixels = logits.shape[-1] * logits.shape[-2]
    groups = logits.reshape(-1, n_pixels), labels.reshape(-1, n_pixels), valid.reshape(-1, n_pixels)
    if not per_image:
        groups = tuple(g.reshape(1, -1) for g in groups)
    losses, grad = [], np.zeros(groups[0].shape)
    for i, (lg, lb, vd) in enumerate(zip(*groups)):
        loss, g = ref_flat(lg[vd], (lb[vd] == 1).astype(float), hinge)
        losses.append(loss)
        grad[i, vd] = g
    return float(np.mean(losses)), grad.reshape(logits.shape) / len(losses)


def run(fn, logits: np.ndarray, labels: np.ndarray, **kwargs) -> tuple[float, np.ndarray]:
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = fn(x, torch.as_tensor(labels), **kwargs)
    loss.backward()
    return loss.item(), x.grad.numpy()


def make_case(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.normal(0.0, 2.0, size=shape)
    labels = (rng.random(shape) < 0.4).astype(np.float64)
    images = labels.reshape(-1, shape[-2] * shape[-1])
    if kind == "mixed" and len(images) >= 3:
        images[0] = 0.0  # empty foreground
        images[1] = 1.0  # all foreground
    return logits, labels


SHAPES = [(3, 5, 7), (2, 1, 4, 6), (2, 3, 1, 5, 4), (4, 1, 1), (1, 1, 1), (3, 1, 9)]


# ------------------------------------------------------------------------------------------------ hand cases


def test_single_pixel_hand_values():
    x = torch.tensor([[[0.3]]], dtype=torch.float64)
    assert lovasz_hinge(x, torch.ones_like(x)).item() == pytest.approx(0.7)  # relu(1 - 0.3) · J_1, J_1 = 1
    assert lovasz_hinge(x, torch.zeros_like(x)).item() == pytest.approx(1.3)
    p = torch.sigmoid(x).item()
    assert lovasz_sigmoid(x, torch.ones_like(x)).item() == pytest.approx(1 - p)
    assert lovasz_sigmoid(x, torch.zeros_like(x)).item() == pytest.approx(p)


def test_empty_foreground_is_not_skipped():
    """No foreground: Jaccard gradient (1, 0, ...), the loss is the largest error (brief §4.1)."""
    logits = torch.tensor([[[-1.0, 0.5], [2.0, -3.0]]], dtype=torch.float64)
    labels = torch.zeros_like(logits)
    assert lovasz_sigmoid(logits, labels).item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert lovasz_hinge(logits, labels).item() == pytest.approx(3.0)  # 1 + 2


def test_two_pixel_hand_value():
    """fg pixel with error 0.8, bg pixel with error 0.5: G = 1; J_1 = 1 − 0/1 = 1, J_2 = 1 − 0/2 = 1 →
    grad (1, 0) → loss 0.8; if the bg pixel has the larger error: J_1 = 1 − 1/2, J_2 = 1 → 0.5·0.9 + 0.5·0.2."""
    labels = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    assert lovasz_hinge(torch.tensor([[[0.2, -0.5]]], dtype=torch.float64), labels).item() == pytest.approx(0.8)
    assert lovasz_hinge(torch.tensor([[[0.8, -0.1]]], dtype=torch.float64), labels).item() == pytest.approx(
        0.5 * 0.9 + 0.5 * 0.2
    )


# ------------------------------------------------------------------------------ against the numpy reference


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("kind", ["random", "mixed"])
def test_hinge_matches_reference(shape, per_image, kind):
    rng = np.random.default_rng(len(shape) * 100 + int(per_image) * 10 + len(kind))
    logits, labels = make_case(rng, shape, kind)
    loss, grad = run(lovasz_hinge, logits, labels, per_image=per_image)
    ref, ref_grad = ref_loss(logits, labels, np.ones(shape, bool), per_image, hinge=True)
    assert loss == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("kind", ["random", "mixed"])
def test_sigmoid_matches_reference(shape, per_image, kind):
    rng = np.random.default_rng(len(shape) * 100 + int(per_image) * 10 + len(kind) + 1)
    logits, labels = make_case(rng, shape, kind)
    loss, grad = run(lovasz_sigmoid, logits, labels, per_image=per_image)
    ref, ref_grad = ref_loss(logits, labels, np.ones(shape, bool), per_image, hinge=False)
    assert loss == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)


@pytest.mark.parametrize("per_image", [True, False])
def test_ignored_pixels(per_image):
    """Hinge ``ignore`` label and sigmoid ``valid`` mask drop the same pixels; an image with every pixel
    ignored contributes 0 (and still counts in the per-image mean, as in the reference)."""
    rng = np.random.default_rng(5)
    shape = (4, 1, 6, 5)
    logits, labels = make_case(rng, shape, "mixed")
    valid = rng.random(shape) > 0.3
    valid[3] = False
    hinge_labels = np.where(valid, labels, 255.0)
    loss, grad = run(lovasz_hinge, logits, hinge_labels, per_image=per_image, ignore=255)
    ref, ref_grad = ref_loss(logits, labels, valid, per_image, hinge=True)
    assert loss == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)
    assert not grad[~valid].any()

    loss, grad = run(lovasz_sigmoid, logits, labels, per_image=per_image, valid=torch.as_tensor(valid))
    ref, ref_grad = ref_loss(logits, labels, valid, per_image, hinge=False)
    assert loss == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)
    assert not grad[~valid].any()


def test_all_pixels_ignored_gives_zero_with_zero_gradient():
    logits = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    for loss in (
        lovasz_hinge(logits, torch.full((2, 3, 3), 255.0), ignore=255),
        lovasz_sigmoid(logits, torch.ones(2, 3, 3), valid=torch.zeros(2, 3, 3, dtype=torch.bool)),
    ):
        (grad,) = torch.autograd.grad(loss, logits)
        assert loss.item() == 0.0 and not grad.any()


@pytest.mark.parametrize("fn", [lovasz_hinge, lovasz_sigmoid])
@pytest.mark.parametrize("per_image", [True, False])
def test_gradient_matches_finite_differences(fn, per_image):
    """Away from ties the losses are smooth, so autograd must agree with central differences."""
    rng = np.random.default_rng(11)
    logits, labels = make_case(rng, (3, 1, 4, 4), "mixed")
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    y = torch.as_tensor(labels)
    assert torch.autograd.gradcheck(lambda z: fn(z, y, per_image=per_image), (x,), eps=1e-7, atol=1e-5)


def test_label_dtypes_are_equivalent():
    rng = np.random.default_rng(3)
    logits, labels = make_case(rng, (2, 5, 5), "random")
    x = torch.tensor(logits)
    for fn in (lovasz_hinge, lovasz_sigmoid):
        as_float = fn(x, torch.tensor(labels))
        assert fn(x, torch.tensor(labels).long()).item() == pytest.approx(as_float.item(), abs=1e-12)
        assert fn(x, torch.tensor(labels).bool()).item() == pytest.approx(as_float.item(), abs=1e-12)


def test_segmentation_loss_is_weighted_pooled_sigmoid():
    rng = np.random.default_rng(8)
    logits, labels = make_case(rng, (2, 3, 1, 6, 6), "mixed")
    x, y = torch.tensor(logits), torch.tensor(labels)
    valid = torch.tensor(rng.random(logits.shape) > 0.2)
    pooled = lovasz_sigmoid(x, y, per_image=False, valid=valid)
    assert segmentation_loss(x, y, valid).item() == pytest.approx(100.0 * pooled.item(), rel=1e-12)
    assert segmentation_loss(x, y, weight=2.0).item() == pytest.approx(
        2.0 * ref_loss(logits, labels, np.ones(logits.shape, bool), False, hinge=False)[0], rel=1e-10
    )
    assert pooled.item() != pytest.approx(lovasz_sigmoid(x, y, per_image=True, valid=valid).item())


def test_shape_errors():
    with pytest.raises(InputError):
        lovasz_hinge(torch.zeros(2, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(InputError):
        lovasz_sigmoid(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), valid=torch.ones(2, 4))


def test_half_precision_logits_count_pixels_exactly():
    """90 000 pixels overflow float16 counts (max 65 504); the Jaccard terms must still be computed exactly."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 300, 300, generator=gen).half()
    labels = (torch.rand(1, 300, 300, generator=gen) < 0.3).float()
    half = lovasz_sigmoid(logits, labels)
    assert torch.isfinite(half)
    assert half.item() == pytest.approx(lovasz_sigmoid(logits.float(), labels).item(), rel=1e-3)


def test_label_loss_averages_masks_and_valid_pixels_to_the_grid():
    labels = torch.zeros(1, 1, 1, 4, 4)
    labels[..., :2, :2] = 1  # the top-left cell is covered, the others are empty
    logits = torch.zeros(1, 1, 1, 2, 2)
    logits[..., 0, 0] = 2.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (bce(torch.tensor(2.0), torch.tensor(1.0)) + 3 * bce(torch.tensor(0.0), torch.tensor(0.0))) / 4
    assert label_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    valid = torch.ones_like(labels)
    valid[..., :2, 2:] = 0  # the top-right cell is left out; half of the top-left cell is void
    valid[..., 0, :2] = 0
    target = torch.tensor(1.0)  # the valid half of the top-left cell is all foreground
    expected = (0.5 * bce(torch.tensor(2.0), target) + 2 * bce(torch.tensor(0.0), torch.tensor(0.0))) / 2.5
    assert label_loss(logits, labels, valid).item() == pytest.approx(expected.item(), rel=1e-6)
