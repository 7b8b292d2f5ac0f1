"""DAVIS region similarity J, contour accuracy F and their statistics (brief §5).

Same semantics as the official DAVIS 2017 toolkit (davisvideochallenge/davis2017-evaluation,
``davis2017/metrics.py`` and ``utils.py``), written for speed: a whole stack of frames is scored at once with
numpy, and the disk dilation of the F measure is replaced by an exact sparse test (see
:func:`_count_within`), so no dense dilated map is ever built.

Conventions kept from the toolkit:

* masks are binary, any non-zero value is foreground;
* J of two empty masks is 1 (brief §5.1);
* F: both boundaries empty gives 1, exactly one empty gives 0 (brief §5.2);
* void pixels, when given, are removed from both masks (J counts, and before the boundary maps of F).
  The official evaluation script builds its void mask from ground truth in which void was already mapped to
  background, so it is always empty: official numbers correspond to ``void_pixels=None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

from yofo.errors import InputError

MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""Keys of :func:`aggregate`, named as in the toolkit's global-results CSV."""

CHUNK_PIXELS = 1 << 20
"""Pixels per chunk of frames scored at once by :func:`db_eval_boundary` (2 frames at 480p)."""


def _as_stack(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check shapes and return boolean ``(T, H, W)`` views of the inputs (``T = 1`` for one frame)."""
    annotation, segmentation = np.asarray(annotation), np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise InputError(
            f"annotation shape {annotation.shape} and segmentation shape {segmentation.shape} differ"
        )
    if annotation.ndim not in (2, 3):
        raise InputError(f"masks must be (H, W) or (T, H, W), got shape {annotation.shape}")
    if void_pixels is not None:
        void_pixels = np.asarray(void_pixels)
        if void_pixels.shape != annotation.shape:
            raise InputError(
                f"void_pixels shape {void_pixels.shape} differs from annotation shape {annotation.shape}"
            )
        void_pixels = void_pixels.astype(bool, copy=False).reshape((-1, *annotation.shape[-2:]))
    stack = (-1, *annotation.shape[-2:])
    return (
        annotation.astype(bool, copy=False).reshape(stack),
        segmentation.astype(bool, copy=False).reshape(stack),
        void_pixels,
    )


def _per_frame(values: np.ndarray, ndim: int) -> float | np.ndarray:
    """Return a float for a single ``(H, W)`` frame, the ``(T,)`` array for a stack."""
    return float(values[0]) if ndim == 2 else values


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> float | np.ndarray:
    """Region similarity J = |S ∩ G| / |S ∪ G| over non-void pixels; 1 when the union is empty (brief §5.1).

    Args:
        annotation: ground truth G, ``(H, W)`` or ``(T, H, W)``, non-zero = object.
        segmentation: prediction S, same shape.
        void_pixels: optional mask of pixels to leave out, same shape.

    Returns:
        J as a float for one frame, or a ``(T,)`` float64 array for a stack.
    """
    ndim = np.ndim(annotation)
    gt, seg, void = _as_stack(annotation, segmentation, void_pixels)
    inter, union = gt & seg, gt | seg
    if void is not None:
        inter &= ~void
        union &= ~void
    n_inter = np.count_nonzero(inter, axis=(1, 2))
    n_union = np.count_nonzero(union, axis=(1, 2))
    j = np.ones(len(n_union))
    np.divide(n_inter, n_union, out=j, where=n_union > 0)
    return _per_frame(j, ndim)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of binary masks, as the toolkit's ``_seg2bmap`` (brief §5.2).

    A pixel is on the boundary if it differs from its east, south or south-east neighbour. Neighbours outside
    the image do not exist, so the last row compares east only, the last column south only, the bottom-right
    pixel is never a boundary, and an object touching the image border has no contour along it.

    Args:
        mask: ``(..., H, W)``, non-zero = object.

    Returns:
        ``(..., H, W)`` bool boundary map.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    bmap = np.zeros(mask.shape, dtype=bool)
    bmap[..., :, :-1] = mask[..., :, :-1] ^ mask[..., :, 1:]
    bmap[..., :-1, :] |= mask[..., :-1, :] ^ mask[..., 1:, :]
    bmap[..., :-1, :-1] |= mask[..., :-1, :-1] ^ mask[..., 1:, 1:]
    return bmap


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Pixel tolerance of F: ``bound_th`` itself if ≥ 1, else ceil(bound_th · image diagonal) (brief §5.2).

    480×854 gives 8 px and 720×1280 gives 12 px. The toolkit would also take a fractional ``bound_th`` ≥ 1,
    but then builds an even-sized, off-centre disk; only whole pixel radii are accepted here.
    """
    if bound_th < 0:
        raise InputError(f"bound_th must be >= 0, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise InputError(f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))  # = np.linalg.norm((H, W))


def _count_within(query: np.ndarray, ref: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, count the ``query`` pixels, and those of them in ``ref`` dilated by the disk of ``radius``.

    The toolkit dilates with ``skimage.morphology.disk(r)`` as a cv2 kernel, i.e. by the offsets
    {(dy, dx): dy² + dx² ≤ r²}, pixels outside the image counting as empty. A pixel (y, x) is in that dilation
    iff, for some |dy| ≤ r, row y + dy of ``ref`` holds a pixel in columns [x − w, x + w] with
    w = isqrt(r² − dy²), because the disk is exactly the union of those horizontal runs. Row prefix sums answer
    each run test in O(1), so the cost is (2r + 1) look-ups per query pixel plus one pass over ``ref``.

    Args:
        query, ref: ``(T, H, W)`` bool.
        radius: disk radius r ≥ 0 in pixels.

    Returns:
        ``(T,)`` int64 counts of all query pixels and of the query pixels within ``radius`` of ``ref``.
    """
    n_frames, height, width = ref.shape
    # prefix[t, r + y, x] = number of ref pixels in row y left of column x; r empty rows pad top and bottom.
    prefix = np.zeros((n_frames, height + 2 * radius, width + 1), dtype=np.int32)
    np.cumsum(ref, axis=2, dtype=np.int32, out=prefix[:, radius : radius + height, 1:])
    flat = prefix.reshape(-1)
    t, pixel = np.divmod(np.flatnonzero(query), height * width)
    y, x = np.divmod(pixel, width)
    row_start = (t * (height + 2 * radius) + y + radius) * (width + 1)
    hit = np.zeros(len(t), dtype=bool)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        row = row_start + dy * (width + 1)
        hit |= flat[row + np.minimum(x + half + 1, width)] > flat[row + np.maximum(x - half, 0)]
    return np.bincount(t, minlength=n_frames), np.bincount(t[hit], minlength=n_frames)


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = 0.008,
) -> float | np.ndarray:
    """Contour accuracy F, the F-measure of boundary precision and recall (brief §5.2).

    P = |B_S ∩ dil(B_G)| / |B_S| and R = |B_G ∩ dil(B_S)| / |B_G| with the 1-pixel boundaries of
    :func:`seg2bmap` and a disk dilation of radius :func:`boundary_radius`; no thinning. F = 2PR / (P + R),
    or 0 if P + R = 0; both boundaries empty gives F = 1, exactly one empty gives F = 0.

    Args:
        annotation: ground truth G, ``(H, W)`` or ``(T, H, W)``, non-zero = object.
        segmentation: prediction S, same shape.
        void_pixels: optional mask, same shape; void pixels are cleared in both masks before the boundaries
            are taken (the toolkit's order).
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in whole pixels (≥ 1).

    Returns:
        F as a float for one frame, or a ``(T,)`` float64 array for a stack.
    """
    ndim = np.ndim(annotation)
    gt, seg, void = _as_stack(annotation, segmentation, void_pixels)
    radius = boundary_radius(*gt.shape[1:], bound_th=bound_th)
    # Frames are scored in chunks of about CHUNK_PIXELS pixels: the index arrays of _count_within grow with
    # the number of boundary pixels, up to several bytes per pixel for noisy masks.
    chunk = max(1, CHUNK_PIXELS // (gt.shape[1] * gt.shape[2]))
    f = np.empty(len(gt))
    for start in range(0, len(gt), chunk):
        part = slice(start, start + chunk)
        gt_part, seg_part = gt[part], seg[part]
        if void is not None:
            gt_part, seg_part = gt_part & ~void[part], seg_part & ~void[part]
        f[part] = _f_measure(gt_part, seg_part, radius)
    return _per_frame(f, ndim)


def _f_measure(gt: np.ndarray, seg: np.ndarray, radius: int) -> np.ndarray:
    """F of each frame of ``(T, H, W)`` bool stacks (void already cleared), with the toolkit's conventions."""
    gt_b, seg_b = seg2bmap(gt), seg2bmap(seg)
    n_seg, seg_matched = _count_within(seg_b, gt_b, radius)
    n_gt, gt_matched = _count_within(gt_b, seg_b, radius)
    precision = seg_matched / np.maximum(n_seg, 1)
    recall = gt_matched / np.maximum(n_gt, 1)
    total = precision + recall
    f = np.zeros(len(n_gt))
    np.divide(2 * precision * recall, total, out=f, where=total > 0)
    # Empty-boundary conventions (P, R) = (1, 0), (0, 1) or (1, 1): only F of the last one is non-zero.
    f[(n_gt == 0) | (n_seg == 0)] = 0.0
    f[(n_gt == 0) & (n_seg == 0)] = 1.0
    return f


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame J or F values, as the toolkit (brief §5.3).

    * mean M = nanmean;
    * recall O = fraction of frames with value > 0.5 (a NaN frame counts as a miss);
    * decay D = nanmean(first bin) − nanmean(last bin) of four bins delimited by
      ids = round(linspace(1, n, 5) + 1e-10) − 1, each bin ``values[ids[i] : ids[i + 1] + 1]`` (inclusive, so
      neighbouring bins share a frame).

    The toolkit casts ``ids`` to uint8, which wraps for more than 256 frames; that cast is deliberately not
    reproduced (identical results up to 256 frames, correct bins beyond).

    Args:
        per_frame_values: ``(n,)`` values of the scored frames.

    Returns:
        ``(M, O, D)`` floats; all NaN when ``n = 0``.
    """
    values = np.asarray(per_frame_values, dtype=np.float64)
    if values.ndim != 1:
        raise InputError(f"per_frame_values must be 1-D, got shape {values.shape}")
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():  # an all-NaN bin gives NaN, as in the toolkit
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    recall = float(np.mean(values > 0.5))
    return mean, recall, decay


def aggregate(per_object: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Global DAVIS results over objects (brief §5.3).

    Each statistic of :func:`db_statistics` is averaged over all objects of all sequences (object-weighted, not
    sequence-weighted), and J&F-Mean = (J-Mean + F-Mean) / 2.

    Args:
        per_object: ``{"<seq>_<obj_id>": {"J": (n,) values, "F": (n,) values}}`` for the scored frames.

    Returns:
        dict with the keys of :data:`MEASURES`.
    """
    if not per_object:
        raise InputError("aggregate: no objects to aggregate")
    stats: dict[str, list[tuple[float, float, float]]] = {"J": [], "F": []}
    for name, values in per_object.items():
        for measure in ("J", "F"):
            if measure not in values:
                raise InputError(f"aggregate: object {name!r} has no {measure!r} values")
            stats[measure].append(db_statistics(values[measure]))
    result = {}
    for measure in ("J", "F"):
        mean, recall, decay = np.mean(stats[measure], axis=0)
        result |= {f"{measure}-Mean": float(mean), f"{measure}-Recall": float(recall), f"{measure}-Decay": float(decay)}
    result["J&F-Mean"] = (result["J-Mean"] + result["F-Mean"]) / 2
    return {key: result[key] for key in MEASURES}
