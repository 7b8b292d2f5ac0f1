"""The Eq. (1) solver: monotone descent, the closed-form ridge solution, gradients, degenerate inputs."""

import pytest
import torch
import torch.nn.functional as F

from yofo.errors import InputError
from yofo.model.meta_transfer import apply_filter, solve_filter


def _problem(batch=2, samples=3, channels=4, dim=3, height=5, width=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, samples, channels, height, width, generator=g, dtype=dtype)
    labels = torch.randn(batch, samples, dim, height, width, generator=g, dtype=dtype)
    weights = torch.rand(batch, samples, dim, height, width, generator=g, dtype=dtype) + 0.5
    return feats, labels, weights


def _ridge(feats, labels, weights, reg, k=3):
    """Closed form per filter output channel: θ_d = (Aᵀ diag(w_d²) A + λI)⁻¹ Aᵀ diag(w_d²) y_d."""
    batch, samples, channels = feats.shape[:3]
    dim = labels.shape[2]
    out = torch.zeros(batch, dim, channels, k, k, dtype=feats.dtype)
    for b in range(batch):
        # patches (S·H·W, C·k·k) in the layout of conv2d's weight (C, k, k)
        cols = F.unfold(feats[b], k, padding=k // 2).transpose(1, 2).reshape(-1, channels * k * k)
        for d in range(dim):
            w2 = (weights[b, :, d] ** 2).reshape(-1)
            y = labels[b, :, d].reshape(-1)
            lhs = cols.T @ (w2[:, None] * cols) + reg * torch.eye(cols.shape[1], dtype=feats.dtype)
            out[b, d] = torch.linalg.solve(lhs, cols.T @ (w2 * y)).view(channels, k, k)
    return out


def _objective(feats, labels, weights, reg, filters):
    residual = weights * (apply_filter(feats, filters) - labels)
    return (residual**2).sum(dim=(1, 2, 3, 4)) + reg * (filters**2).sum(dim=(1, 2, 3, 4))


def test_objective_never_increases_and_losses_are_the_objective():
    feats, labels, weights = _problem()
    filters, losses = solve_filter(feats, labels, weights, 1e-2, num_iters=30)
    assert losses.shape == (31, 2)
    assert torch.all(losses[1:] <= losses[:-1] * (1 + 1e-12))
    assert torch.all(losses[-1] < 0.75 * losses[0])
    torch.testing.assert_close(losses[-1], _objective(feats, labels, weights, 1e-2, filters))
    torch.testing.assert_close(losses[0], (weights**2 * labels**2).sum(dim=(1, 2, 3, 4)))


def test_converges_to_closed_form_ridge_solution():
    feats, labels, weights = _problem(channels=2, dim=2, samples=2, height=4, width=4, seed=1)
    weights = torch.ones_like(weights)  # well conditioned
    reg = 0.5
    filters, _ = solve_filter(feats, labels, weights, reg, num_iters=400)
    expected = _ridge(feats, labels, weights, reg)
    rel = (filters - expected).norm() / expected.norm()
    assert rel < 1e-4


def test_shared_features_equal_per_filter_features():
    feats, labels, weights = _problem(batch=3)
    shared = feats[:1]
    a, la = solve_filter(shared, labels, weights, 1e-3, num_iters=4)
    b, lb = solve_filter(shared.expand(3, *shared.shape[1:]), labels, weights, 1e-3, num_iters=4)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(la, lb)


def test_per_sample_regularisation_and_warm_start():
    feats, labels, weights = _problem()
    reg = torch.tensor([1e-3, 1.0], dtype=torch.float64)
    first, _ = solve_filter(feats, labels, weights, reg, num_iters=3)
    both, _ = solve_filter(feats, labels, weights, reg, num_iters=6)
    resumed, losses = solve_filter(feats, labels, weights, reg, num_iters=3, init=first)
    torch.testing.assert_close(resumed, both)
    single, _ = solve_filter(feats[1:], labels[1:], weights[1:], 1.0, num_iters=6)
    torch.testing.assert_close(both[1:], single)


def test_gradients_flow_through_the_unrolled_solver():
    feats, labels, weights = _problem(batch=1, samples=2, channels=2, dim=2, height=3, width=4)
    reg = torch.tensor(0.1, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (feats, labels, weights, reg))

    def fn(f, y, w, r):
        filters, _ = solve_filter(f, y, w, r, num_iters=3)
        return apply_filter(f[:, :1], filters)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", ["zero_weights", "solved"])
def test_degenerate_problems_give_no_nan(case):
    feats, labels, weights = _problem(dtype=torch.float32)
    if case == "zero_weights":
        weights = torch.zeros_like(weights)
        reg = 0.0
    else:
        labels = torch.zeros_like(labels)  # θ = 0 is already optimal: g = 0
        reg = 1e-4
    weights.requires_grad_(True)
    filters, losses = solve_filter(feats, labels, weights, reg, num_iters=5)
    assert torch.isfinite(filters).all() and torch.isfinite(losses).all()
    assert filters.abs().max() == 0
    filters.sum().backward()
    assert torch.isfinite(weights.grad).all()


def test_bad_shapes_raise_input_error():
    feats, labels, weights = _problem()
    with pytest.raises(InputError, match="feats"):
        solve_filter(feats[0], labels, weights, 0.1, 2)
    with pytest.raises(InputError):
        solve_filter(feats, labels, weights[:, :, :1], 0.1, 2)
    with pytest.raises(InputError):
        solve_filter(feats[:, :2], labels, weights, 0.1, 2)
