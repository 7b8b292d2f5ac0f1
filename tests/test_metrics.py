"""DAVIS J / F / statistics (yofo.metrics) against hand-computed values, a plain reference written here, and
the published per-frame OSVOS scores of the DAVIS 2017 benchmark on the real masks in ../shared/data/real."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from yofo import metrics
from yofo.errors import InputError
from yofo.metrics import (
    MEASURES,
    aggregate,
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    seg2bmap,
)


# ---------------------------------------------------------------- plain reference (pixel loops, explicit disk)


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixel = differs from an existing east, south or south-east neighbour."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            for ny, nx in ((y, x + 1), (y + 1, x), (y + 1, x + 1)):
                if ny < h and nx < w and mask[y, x] != mask[ny, nx]:
                    out[y, x] = True
    return out


def ref_disk(r: int) -> np.ndarray:
    k = np.zeros((2 * r + 1, 2 * r + 1), dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            k[dy + r, dx + r] = dy * dy + dx * dx <= r * r
    return k


def ref_radius(shape: tuple[int, int], bound_th: float) -> int:
    return int(bound_th) if bound_th >= 1 else int(np.ceil(bound_th * np.linalg.norm(shape)))


def ref_f(gt: np.ndarray, seg: np.ndarray, void: np.ndarray | None, bound_th: float) -> float:
    gt, seg = gt.astype(bool), seg.astype(bool)
    if void is not None:
        gt, seg = gt & ~void, seg & ~void
    return ref_f_boundaries(ref_boundary(gt), ref_boundary(seg), ref_radius(gt.shape, bound_th))


def ref_f_boundaries(bg: np.ndarray, bs: np.ndarray, r: int) -> float:
    dil_g = ndimage.binary_dilation(bg, structure=ref_disk(r)) if bg.any() else bg
    dil_s = ndimage.binary_dilation(bs, structure=ref_disk(r)) if bs.any() else bs
    n_s, n_g = bs.sum(), bg.sum()
    if n_s == 0 and n_g > 0:
        p, rc = 1.0, 0.0
    elif n_s > 0 and n_g == 0:
        p, rc = 0.0, 1.0
    elif n_s == 0 and n_g == 0:
        p, rc = 1.0, 1.0
    else:
        p, rc = (bs & dil_g).sum() / n_s, (bg & dil_s).sum() / n_g
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def ref_j(gt: np.ndarray, seg: np.ndarray, void: np.ndarray | None) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~void
    union = ((gt > 0) | (seg > 0)) & keep
    return 1.0 if union.sum() == 0 else (((gt > 0) & (seg > 0)) & keep).sum() / union.sum()


def random_mask(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    h, w = shape
    if kind == "noise":
        return rng.random(shape) < rng.uniform(0.1, 0.9)
    if kind == "blob":  # smooth random shapes, often touching the border
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(1.0, min(h, w) / 6))
        return field > np.quantile(field, rng.uniform(0.2, 0.8))
    if kind == "border":  # a rectangle glued to one or two image sides
        m = np.zeros(shape, bool)
        m[: rng.integers(1, h + 1), rng.integers(0, w) :] = True
        return m
    if kind == "empty":
        return np.zeros(shape, bool)
    return np.ones(shape, bool)  # "full"


# ------------------------------------------------------------------------------------------------ hand cases


def test_seg2bmap_single_pixel_and_border():
    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:2] = True  # (1,1) and the three pixels whose E / S / SE neighbour it is
    np.testing.assert_array_equal(seg2bmap(m), expected)

    left = np.zeros((4, 4), bool)
    left[:, :2] = True  # touches the left, top and bottom borders: only the inner edge is a contour
    expected = np.zeros((4, 4), bool)
    expected[:, 1] = True
    np.testing.assert_array_equal(seg2bmap(left), expected)

    assert not seg2bmap(np.ones((5, 3), bool)).any()
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True  # bottom-right pixel: never itself a boundary, its W / N / NW neighbours are
    np.testing.assert_array_equal(seg2bmap(corner), [[0, 0, 0], [0, 1, 1], [0, 1, 0]])


def test_iou_hand_cases():
    gt = np.zeros((3, 3), bool)
    gt[0, :2] = True  # a, b
    seg = np.zeros((3, 3), bool)
    seg[0, 0] = seg[2, 2] = True  # a, c
    assert db_eval_iou(gt, seg) == pytest.approx(1 / 3)
    void = np.zeros((3, 3), bool)
    void[2, 2] = True
    assert db_eval_iou(gt, seg, void) == pytest.approx(1 / 2)
    assert db_eval_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert db_eval_iou(gt, np.zeros((3, 3))) == 0.0
    assert db_eval_iou(gt.astype(np.uint8) * 7, seg.astype(float)) == pytest.approx(1 / 3)  # non-zero = object


def test_boundary_disk_not_square():
    """Single pixels at (5,5) and (6,6): boundaries {4,5}² and {5,6}²; (6,6) is √2 from (5,5)."""
    gt = np.zeros((12, 12), bool)
    seg = np.zeros((12, 12), bool)
    gt[5, 5] = seg[6, 6] = True
    assert db_eval_boundary(gt, seg, bound_th=0) == pytest.approx(0.25)  # only (5,5) shared
    assert db_eval_boundary(gt, seg, bound_th=1) == pytest.approx(0.75)  # a 3×3 square would give 1
    assert db_eval_boundary(gt, seg, bound_th=2) == pytest.approx(1.0)


def test_boundary_empty_conventions_and_void():
    empty = np.zeros((10, 10), bool)
    obj = np.zeros((10, 10), bool)
    obj[3:6, 3:6] = True
    assert db_eval_boundary(empty, empty) == 1.0
    assert db_eval_boundary(obj, empty) == 0.0
    assert db_eval_boundary(empty, obj) == 0.0
    full = np.ones((10, 10), bool)
    assert db_eval_boundary(full, full) == 1.0  # no contour along the image border
    assert db_eval_boundary(full, empty) == 1.0  # ... so a full mask vs an empty one has F = 1
    assert db_eval_iou(full, empty) == 0.0
    other = np.zeros((10, 10), bool)
    other[7:9, 7:9] = True
    void = np.zeros((10, 10), bool)
    void[6:10, 6:10] = True  # hides the prediction: prediction boundary empty, ground truth not -> 0
    assert db_eval_boundary(obj, other, bound_th=1) == 0.0
    assert db_eval_boundary(obj, other, void, bound_th=1) == 0.0
    void[2:7, 2:7] = True  # hides both: both empty -> 1
    assert db_eval_boundary(obj, other, void, bound_th=1) == 1.0


def test_boundary_radius():
    assert boundary_radius(480, 854) == 8
    assert boundary_radius(720, 1280) == 12
    assert boundary_radius(10, 10, bound_th=3) == 3
    with pytest.raises(InputError):
        boundary_radius(10, 10, bound_th=2.5)
    with pytest.raises(InputError):
        boundary_radius(10, 10, bound_th=-0.1)


def test_shapes_and_errors():
    rng = np.random.default_rng(1)
    gt, seg = rng.random((4, 9, 11)) < 0.5, rng.random((4, 9, 11)) < 0.5
    j, f = db_eval_iou(gt, seg), db_eval_boundary(gt, seg)
    assert j.shape == f.shape == (4,)
    for t in range(4):
        one_j, one_f = db_eval_iou(gt[t], seg[t]), db_eval_boundary(gt[t], seg[t])
        assert isinstance(one_j, float) and isinstance(one_f, float)
        assert one_j == j[t] and one_f == f[t]
    with pytest.raises(InputError):
        db_eval_iou(gt, seg[:2])
    with pytest.raises(InputError):
        db_eval_boundary(gt[None], seg[None])
    with pytest.raises(InputError):
        db_eval_boundary(gt, seg, void_pixels=gt[0])


# ------------------------------------------------------------------------------ against the plain reference

SHAPES = [(1, 1), (1, 7), (7, 1), (2, 2), (5, 9), (13, 17), (24, 31), (33, 28)]
KINDS = ["noise", "blob", "border", "empty", "full"]


@pytest.mark.parametrize("shape", SHAPES)
def test_random_masks_match_reference(shape):
    rng = np.random.default_rng(sum(shape))
    cases = [(a, b) for a in KINDS for b in KINDS if rng.random() < 0.5 or a == b] + [("blob", "blob")] * 4
    gts = np.stack([random_mask(rng, shape, a) for a, _ in cases])
    segs = np.stack([random_mask(rng, shape, b) for _, b in cases])
    voids = rng.random(gts.shape) < 0.1
    for void in (None, voids):
        keep = np.ones(gts.shape, bool) if void is None else ~void
        bounds = [(ref_boundary(g & k), ref_boundary(s & k)) for g, s, k in zip(gts, segs, keep)]
        for bound_th in (0.008, 0.15, 0.4, 1, 3):
            f = db_eval_boundary(gts, segs, void, bound_th=bound_th)
            r = ref_radius(shape, bound_th)
            for t, (bg, bs) in enumerate(bounds):
                assert f[t] == pytest.approx(ref_f_boundaries(bg, bs, r), abs=1e-12)
    j, j_void = db_eval_iou(gts, segs), db_eval_iou(gts, segs, voids)
    for t in range(len(cases)):
        assert j[t] == pytest.approx(ref_j(gts[t], segs[t], None), abs=1e-12)
        assert j_void[t] == pytest.approx(ref_j(gts[t], segs[t], voids[t]), abs=1e-12)


def test_chunked_stack_equals_one_chunk(monkeypatch):
    """db_eval_boundary scores long stacks in chunks of frames; chunking must not change any value."""
    rng = np.random.default_rng(3)
    gts = np.stack([random_mask(rng, (20, 30), kind) for kind in KINDS * 2])
    segs = np.stack([random_mask(rng, (20, 30), kind) for kind in KINDS[::-1] * 2])
    voids = rng.random(gts.shape) < 0.05
    whole = db_eval_boundary(gts, segs, voids, bound_th=2)
    monkeypatch.setattr(metrics, "CHUNK_PIXELS", 3 * 20 * 30)  # chunks of 3 frames, the last one shorter
    np.testing.assert_array_equal(db_eval_boundary(gts, segs, voids, bound_th=2), whole)
    for t in range(len(gts)):
        assert whole[t] == pytest.approx(ref_f(gts[t], segs[t], voids[t], 2), abs=1e-12)


def test_large_radius_near_borders_matches_reference():
    """A radius larger than the image: the disk is clipped at the borders, not wrapped across frames/rows."""
    rng = np.random.default_rng(7)
    gts = np.stack([random_mask(rng, (9, 14), "blob") for _ in range(6)])
    segs = np.stack([random_mask(rng, (9, 14), "border") for _ in range(6)])
    segs[2] = False
    f = db_eval_boundary(gts, segs, bound_th=20)
    for t in range(6):
        assert f[t] == pytest.approx(ref_f(gts[t], segs[t], None, 20), abs=1e-12)


# ---------------------------------------------------------------------------------------------- statistics


def test_statistics_hand_cases():
    v = np.array([1.0, 0.2, 0.9, 0.6, 0.0])
    m, o, d = db_statistics(v)  # n = 5: bins [v0,v1], [v1,v2], [v2,v3], [v3,v4]
    assert m == pytest.approx(v.mean())
    assert o == pytest.approx(3 / 5)
    assert d == pytest.approx((1.0 + 0.2) / 2 - (0.6 + 0.0) / 2)
    # n = 3: round(linspace(1, 3, 5) + 1e-10) - 1 = [0, 1, 1, 2, 2] (plain banker's rounding would give
    # [0, 1, 1, 1, 2]); last bin = [v2]
    assert db_statistics([0.9, 0.5, 0.1])[2] == pytest.approx((0.9 + 0.5) / 2 - 0.1)
    assert db_statistics([0.7]) == pytest.approx((0.7, 1.0, 0.0))
    m, o, d = db_statistics([np.nan, 1.0, 0.4, 0.8])
    assert m == pytest.approx((1.0 + 0.4 + 0.8) / 3)
    assert o == pytest.approx(2 / 4)  # a NaN frame counts as a miss
    assert d == pytest.approx(1.0 - 0.6)  # bins [nan, 1.0] and [0.4, 0.8] with nanmean
    assert all(math.isnan(x) for x in db_statistics([]))


def test_statistics_long_sequence_has_no_uint8_wrap():
    v = np.arange(300) / 300  # ids = [0, 75, 150, 224, 299]
    _, _, d = db_statistics(v)
    assert d == pytest.approx(v[0:76].mean() - v[224:300].mean())
    assert d == pytest.approx(-224 / 300)


def test_aggregate_is_object_weighted():
    per_object = {
        "a_1": {"J": np.array([1.0, 1.0, 1.0]), "F": np.array([0.5, 0.5, 0.5])},
        "a_2": {"J": np.array([0.0, 0.0, 0.0]), "F": np.array([1.0, 1.0, 1.0])},
        "b_1": {"J": np.array([0.9, 0.6, 0.3]), "F": np.array([0.2, 0.2, 0.2])},
    }
    g = aggregate(per_object)
    assert tuple(g) == MEASURES
    assert g["J-Mean"] == pytest.approx((1.0 + 0.0 + 0.6) / 3)
    assert g["F-Mean"] == pytest.approx((0.5 + 1.0 + 0.2) / 3)
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)
    assert g["J-Recall"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert g["J-Decay"] == pytest.approx((0 + 0 + (0.75 - 0.3)) / 3)  # n = 3: bins [v0, v1] and [v2]
    assert g["F-Decay"] == pytest.approx(0.0)
    with pytest.raises(InputError):
        aggregate({"a_1": {"J": np.ones(3)}})
    with pytest.raises(InputError):
        aggregate({})


# --------------------------------------------------------------------- real DAVIS masks vs published scores

# Per-frame J and F (4 decimals) of OSVOS on DAVIS 2017 val, object 1, frames 1 .. n-2, as published on the
# benchmark site: davisvideochallenge/davisvideochallenge.github.io, json_data/raw_eval/2017/osvos_davis.json.
# Stored as 4-digit integers (value × 10⁴).
PUBLISHED_OSVOS = {
    "blackswan": (
        "9391 9456 9476 9456 9507 9504 9476 9438 9469 9469 9460 9469 9400 9407 9430 9434 9410 9382 9504 9048 "
        "9458 9498 9512 9456 9475 9421 9385 9384 9452 9438 9418 9256 9400 9302 9416 9406 9401 9430 9380 9457 "
        "9435 9451 9493 9490 9459 9468 9456 9464",
        "9619 9777 9815 9892 9913 9836 9708 9788 9799 9746 9764 9756 9747 9748 9772 9772 9779 9769 9806 9247 "
        "9657 9736 9731 9763 9724 9676 9686 9615 9724 9726 9835 9462 9686 9548 9730 9655 9714 9805 9699 9831 "
        "9805 9782 9870 9803 9886 9819 9801 9745",
    ),
    "breakdance": (
        "9462 8630 7730 8148 8406 8201 7806 7329 8001 8733 9072 8680 7969 8757 8758 8828 8560 8208 8115 5370 "
        "4613 7503 6117 7639 7493 7150 7452 7522 6840 6522 6737 6442 6982 7157 6785 7130 7367 7289 7108 7285 "
        "6772 6321 5885 6565 6658 6682 6761 6559 7463 7619 8086 7610 7511 7108 6574 7841 7976 7892 7817 8717 "
        "8240 7795 8377 8183 6515 6809 6091 4841 4933 5009 6320 7832 8763 8572 7877 7771 6808 6119 4193 5259 "
        "5336 6354",
        "9824 8601 8539 8057 8611 8747 8533 7474 8357 9026 9292 8633 7361 8868 8802 8774 8277 7797 7782 6035 "
        "5431 7970 7121 8168 7903 7774 7939 8325 7574 6457 7354 6734 7776 7885 7230 7459 7975 7798 7546 7902 "
        "7455 5809 5461 7010 6965 5984 7451 7213 7336 7163 7652 7337 7193 7194 6439 7926 8040 7549 7930 9049 "
        "8589 7873 8415 8281 7313 7375 6964 5829 5952 6234 7097 8300 8813 8256 7756 7980 6810 6408 4900 5861 "
        "6017 6990",
    ),
    "camel": (
        "9697 9714 9725 9685 9618 9633 9655 9684 9733 9733 9705 9554 9567 9555 9548 9470 9403 9540 9593 9609 "
        "9637 9595 9594 9579 9607 9509 9495 9485 9421 9367 9349 9236 9246 9282 9350 9324 8796 8731 8661 8526 "
        "8560 8523 8401 8327 8316 8343 8151 8268 7758 8087 8086 8095 8039 8046 8057 8045 8036 8015 8087 8016 "
        "7994 7927 7961 7881 7847 7853 7899 7887 7831 7814 7785 7754 7756 7737 7533 7617 7710 7663 7729 7510 "
        "7554 7497 7536 7257 7268 7300 7401 7350",
        "9940 10000 9990 9920 9590 9806 9827 9835 9975 9850 9915 9760 9764 9748 9593 9442 9503 9753 9866 9883 "
        "9949 9907 9857 9800 9987 9575 9670 9473 9549 9574 9547 9279 9545 9428 9514 9483 9167 9195 9169 9070 "
        "9101 9134 9070 8995 9038 8868 8694 8734 8319 8571 8603 8467 8350 8239 8370 8401 8197 8490 8613 8529 "
        "8448 8344 8409 8289 8202 8293 8284 8047 7983 8028 8220 7975 8089 8104 7707 8025 8127 7973 8152 7406 "
        "7874 7816 7760 7339 7502 7632 8040 8124",
    ),
    "car-shadow": (
        "9705 9727 9692 9682 9644 9632 9590 9617 9520 9560 9557 9613 9584 9617 9622 9613 9607 9624 9628 9640 "
        "9677 9617 9642 9501 9565 9612 9564 7799 9482 9061 9147 9176 8835 7846 7641 8154 8609 7391",
        "9904 9948 9976 9753 9811 9995 9325 9644 9421 9431 9454 9378 9470 9650 9504 9615 9493 9536 9691 10000 "
        "10000 9686 10000 9714 9652 9926 9947 6458 9496 8596 8893 8797 8580 7437 7155 7222 7997 6059",
    ),
    "dog": (
        "9265 8933 7953 7541 7173 8597 9010 9454 9462 9462 9476 8954 4911 831 4384 4473 4762 6926 7378 8786 "
        "9242 9489 848 8730 9184 9260 9297 9384 9522 9439 9337 9439 9293 9478 8955 7353 9146 9207 8841 1356 "
        "1486 1522 1535 1548 1498 1555 1516 1516 1484 9369 9361 9307 9084 9172 9185 9499 9554 9533",
        "9171 8587 6695 6585 6675 7868 8323 9479 9786 9632 9807 8511 5255 430 5772 6442 5533 5314 6451 7842 "
        "9219 9473 1401 7337 8809 8550 8788 9309 9686 9684 9171 9167 9308 9345 8144 6117 8006 8652 7732 2450 "
        "1283 501 1689 1142 1532 199 1276 1702 3585 9157 9397 9273 8880 8659 9039 9653 9748 9619",
    ),
    "drift-straight": (
        "8774 9197 8968 8527 8415 9037 9489 8747 8801 9130 9202 9342 9311 9347 9349 9662 9361 9107 8836 9204 "
        "9309 9374 9436 9203 9441 9223 7577 7382 7087 6403 7264 5771 1764 968 1051 1176 1622 1477 445 1003 "
        "245 148 154 2087 9334 9416 8746 510",
        "9479 9932 9509 8484 9183 9624 9966 8499 8575 9497 9388 9723 9555 9337 9580 10000 9770 9041 8375 9529 "
        "9573 9525 9026 8438 8737 7665 5707 4864 4919 4215 5012 4431 4219 4338 3768 3620 3890 3198 2911 2628 "
        "1663 1415 1155 6185 9070 9440 8893 3699",
    ),
}


def read_object(folder: Path, obj_id: int = 1) -> np.ndarray:
    """(T, H, W) bool mask of one object from a folder of palette PNGs."""
    return np.stack([np.array(Image.open(p)) == obj_id for p in sorted(folder.glob("*.png"))])


@pytest.mark.parametrize("seq", sorted(PUBLISHED_OSVOS))
def test_real_osvos_matches_published_scores(real_data, seq):
    ann_dir, pred_dir = real_data / "DAVIS" / "Annotations" / "480p" / seq, real_data / "osvos" / seq
    if not (ann_dir.is_dir() and pred_dir.is_dir()):
        pytest.skip(f"{seq} not in the real test data")
    gt, pred = read_object(ann_dir)[1:-1], read_object(pred_dir)[1:-1]  # semi-supervised: first/last not scored
    published_j, published_f = (np.array(s.split(), dtype=float) / 1e4 for s in PUBLISHED_OSVOS[seq])
    assert gt.shape == (len(published_j), 480, 854)
    np.testing.assert_allclose(db_eval_iou(gt, pred), published_j, rtol=0, atol=0.5e-4 + 1e-9)
    np.testing.assert_allclose(db_eval_boundary(gt, pred), published_f, rtol=0, atol=0.5e-4 + 1e-9)
