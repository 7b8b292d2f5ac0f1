"""Clip augmentation on tensors (kornia), driven by an explicit numpy generator.

Every random choice is drawn from the ``rng`` passed in, and kornia only receives explicit parameters, so an
augmentation is a pure function of (clip, rng state): the clip sampler derives ``rng`` from (seed, index)
and training is reproducible and resumable without touching torch's global generator.

What is random per clip and what per frame (paper §4.1; brief §2.7, §7.12–13):
- per clip: horizontal flip (with the words "left" and "right" swapped, since a flip changes which object
  they refer to), brightness / contrast / saturation jitter. Hue stays: colour words must keep their meaning.
- per frame: Gaussian blur, random erasing (the erased pixels are marked invalid for the loss), and for clips
  made from one image, an independent random rotation and scale (LWL's ``RandomAffine`` values).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_saturation
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine
from omegaconf import DictConfig

_LEFT_RIGHT = re.compile(r"\b(left|right)(most)?\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap "left" and "right" (also "leftmost" / "rightmost"), keeping capitalisation."""

    def swap(match: re.Match) -> str:
        word, suffix = match.group(1), match.group(2) or ""
        other = "right" if word.lower() == "left" else "left"
        return (other.capitalize() if word[0].isupper() else other) + suffix

    return _LEFT_RIGHT.sub(swap, text)


def random_affine(
    frames: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor,
    rng: np.random.Generator,
    rotation: float,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotate by U(−rotation, rotation) degrees and scale by exp(U(−scale, scale)) about the centre, per frame.

    Args:
        frames: float (T, 3, H, W); masks, valid: float (T, 1, H, W) in {0, 1}.

    Returns:
        the warped tensors; pixels that come from outside the image get valid 0.
    """
    count, _, height, width = frames.shape
    angle = torch.from_numpy(rng.uniform(-rotation, rotation, size=count)).float()
    factor = torch.from_numpy(np.exp(rng.uniform(-scale, scale, size=count))).float()
    center = torch.tensor([[(width - 1) / 2, (height - 1) / 2]]).expand(count, 2)
    matrix = get_rotation_matrix2d(center, angle, factor[:, None].expand(count, 2))
    frames = warp_affine(frames, matrix, (height, width), mode="bilinear", padding_mode="zeros")
    masks = warp_affine(masks, matrix, (height, width), mode="nearest", padding_mode="zeros")
    valid = warp_affine(valid, matrix, (height, width), mode="nearest", padding_mode="zeros")
    return frames, masks, valid


def augment_clip(
    frames: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor,
    text: str,
    rng: np.random.Generator,
    cfg: DictConfig,
    from_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Augment one clip.

    Args:
        frames: float (T, 3, H, W) in [0, 1]; or (T, P + 1, 3, H, W): each frame last after the P video frames
            before it (``data.motion_history``), which get exactly its augmentation (flip, jitter, blur and
            erased box with the same noise), so that an augmentation never looks like motion.
        masks: float (T, 1, H, W), 1 on the target.
        valid: float (T, 1, H, W), 0 on void pixels.
        text: the referring expression.
        rng: the clip's generator.
        cfg: ``data.augment`` (:class:`yofo.config.AugmentConfig`).
        from_image: the clip repeats one image (frames (T, 3, H, W)): apply a random affine per frame.

    Returns:
        (frames, masks, valid, text) with the same shapes; frames stay in [0, 1].
    """
    count, height, width = frames.shape[0], *frames.shape[-2:]
    if from_image:
        frames, masks, valid = random_affine(frames, masks, valid, rng, cfg.affine_rotation, cfg.affine_scale)
    if rng.random() < cfg.hflip_p:
        frames, masks, valid = frames.flip(-1), masks.flip(-1), valid.flip(-1)
        text = swap_left_right(text)
    if cfg.color_jitter > 0:
        low, high = max(0.0, 1 - cfg.color_jitter), 1 + cfg.color_jitter
        brightness, contrast, saturation = rng.uniform(low, high, size=3)
        frames = (frames * float(brightness)).clamp(0, 1)
        frames = adjust_contrast_with_mean_subtraction(frames, float(contrast)).clamp(0, 1)
        frames = adjust_saturation(frames, float(saturation)).clamp(0, 1)
    frames, valid = frames.clone(), valid.clone()
    for t in range(count):
        if rng.random() < cfg.blur_p:
            sigma = float(rng.uniform(0.1, 1.5))
            size = 2 * math.ceil(3 * sigma) + 1
            images = frames[t] if frames.dim() == 5 else frames[t : t + 1]  # (P + 1 or 1, 3, H, W)
            images.copy_(gaussian_blur2d(images, (size, size), (sigma, sigma)))
        if rng.random() < cfg.erase_p:
            # torchvision RandomErasing with value="random": a box of 2–15% of the frame filled with noise
            area = rng.uniform(0.02, 0.15) * height * width
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
            box_h = min(height, max(1, round(math.sqrt(area * aspect))))
            box_w = min(width, max(1, round(math.sqrt(area / aspect))))
            top, left = int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1))
            noise = rng.random((3, box_h, box_w), dtype=np.float32)
            frames[t, ..., top : top + box_h, left : left + box_w] = torch.from_numpy(noise)
            valid[t, :, top : top + box_h, left : left + box_w] = 0
    return frames, masks, valid, text
