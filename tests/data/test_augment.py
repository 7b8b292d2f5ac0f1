"""Clip augmentation: the left/right word swap, and what each transform does to frames, masks and valid maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from yofo.config import AugmentConfig
from yofo.data.augment import augment_clip, swap_left_right


def _cfg(**values):
    off = dict(color_jitter=0.0, blur_p=0.0, erase_p=0.0, hflip_p=0.0, affine_rotation=0.0, affine_scale=0.0)
    return OmegaConf.structured(AugmentConfig(**{**off, **values}))


def _clip(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(3, 3, 32, 48, generator=generator)
    masks = torch.zeros(3, 1, 32, 48)
    masks[:, :, 8:20, 4:16] = 1
    return frames, masks, torch.ones(3, 1, 32, 48)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the dog on the left", "the dog on the right"),
        ("Left car, right bike", "Right car, left bike"),
        ("the rightmost red shape", "the leftmost red shape"),
        ("a bright light, lefty", "a bright light, lefty"),
    ],
)
def test_swap_left_right(text: str, expected: str) -> None:
    assert swap_left_right(text) == expected


def test_everything_off_is_the_identity() -> None:
    frames, masks, valid = _clip()
    out = augment_clip(frames, masks, valid, "the left one", np.random.default_rng(0), _cfg(), from_image=True)
    assert torch.allclose(out[0], frames, atol=1e-5) and torch.equal(out[1], masks) and torch.equal(out[2], valid)
    assert out[3] == "the left one"


def test_flip_mirrors_frames_masks_valid_and_swaps_words() -> None:
    frames, masks, valid = _clip()
    out = augment_clip(frames, masks, valid, "the cat on the left", np.random.default_rng(0), _cfg(hflip_p=1.0))
    assert torch.equal(out[0], frames.flip(-1)) and torch.equal(out[1], masks.flip(-1))
    assert out[3] == "the cat on the right"


def test_erasing_blur_and_jitter_keep_range_and_mark_erased_pixels_invalid() -> None:
    frames, masks, valid = _clip()
    out_frames, out_masks, out_valid, _ = augment_clip(
        frames, masks, valid, "x", np.random.default_rng(1), _cfg(color_jitter=0.4, blur_p=1.0, erase_p=1.0)
    )
    assert out_frames.shape == frames.shape and 0 <= out_frames.min() and out_frames.max() <= 1
    assert not torch.allclose(out_frames, frames)
    assert torch.equal(out_masks, masks)  # photometric transforms leave the target alone
    erased = out_valid[:, 0] == 0
    assert all(erased[t].any() for t in range(3))  # erase_p = 1: a box per frame
    assert erased.float().mean() < 0.2


def test_image_clips_get_an_independent_affine_per_frame_applied_to_mask_too() -> None:
    frames, masks, valid = _clip()
    frames = frames[:1].expand(3, -1, -1, -1).contiguous()
    out_frames, out_masks, out_valid, _ = augment_clip(
        frames, masks, valid, "x", np.random.default_rng(2), _cfg(affine_rotation=15.0, affine_scale=0.2), from_image=True
    )
    assert not torch.allclose(out_frames[0], out_frames[1]) and not torch.equal(out_masks[0], out_masks[1])
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}  # nearest interpolation keeps the mask binary
    assert (out_valid == 0).any()  # pixels from outside the image are not supervised
    # the target moved with the image: its warped area stays close to the original (scale within exp(±0.2)²)
    ratio = out_masks.sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))
    assert ((ratio > 0.6) & (ratio < 1.6)).all()


def test_same_generator_same_result_and_global_rng_untouched() -> None:
    frames, masks, valid = _clip()
    cfg = _cfg(color_jitter=0.2, blur_p=0.5, erase_p=0.5, hflip_p=0.5, affine_rotation=15.0, affine_scale=0.2)
    state = torch.random.get_rng_state()
    first = augment_clip(frames, masks, valid, "left", np.random.default_rng(9), cfg, from_image=True)
    second = augment_clip(frames, masks, valid, "left", np.random.default_rng(9), cfg, from_image=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first[:3], second[:3])) and first[3] == second[3]
