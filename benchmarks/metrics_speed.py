"""Speed of the DAVIS metrics on 480p (480×854) frame pairs, scored as one stack per call.

Usage: .venv/bin/python benchmarks/metrics_speed.py [--frames 50] [--repeats 3]

Cases:
  ellipse  synthetic moving ellipse vs a shifted, slightly larger prediction (typical sparse contours)
  noise    random-noise prediction, about half of all pixels on a contour (worst case for F)
  osvos    real DAVIS blackswan ground truth vs OSVOS (only if ../shared/data/real exists)

Prints the best of ``--repeats`` runs in milliseconds per frame pair.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from yofo.metrics import db_eval_boundary, db_eval_iou

HEIGHT, WIDTH = 480, 854
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def ellipses(n_frames: int, shift: float, grow: float) -> np.ndarray:
    """(T, H, W) bool: an ellipse drifting to the right over the frames."""
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    t = np.arange(n_frames)[:, None, None]
    cx, cy = 200 + 8 * t + shift, 240 + shift
    return ((x - cx) / (150 * grow)) ** 2 + ((y - cy) / (110 * grow)) ** 2 <= 1


def real_pair(n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    ann, pred = REAL / "DAVIS" / "Annotations" / "480p" / "blackswan", REAL / "osvos" / "blackswan"
    if not (ann.is_dir() and pred.is_dir()):
        return None

    def read(folder: Path) -> np.ndarray:
        return np.stack([np.array(Image.open(p)) == 1 for p in sorted(folder.glob("*.png"))[:n_frames]])

    return read(ann), read(pred)


def best_ms_per_frame(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], gt: np.ndarray, pred: np.ndarray, repeats: int
) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(gt, pred)
        times.append(time.perf_counter() - start)
    return 1000 * min(times) / len(gt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="frames per stack (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, the best is reported (default 3)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    gt = ellipses(args.frames, 0.0, 1.0)
    cases = {
        "ellipse": (gt, ellipses(args.frames, 5.0, 1.05)),
        "noise": (gt, rng.random(gt.shape) < 0.5),
    }
    real = real_pair(args.frames)
    if real is not None:
        cases["osvos"] = real

    print(f"ms per {HEIGHT}x{WIDTH} frame pair, stacks of up to {args.frames} frames, best of {args.repeats}")
    print(f"{'case':<8} {'frames':>6} {'J (iou)':>9} {'F (boundary)':>13}")
    for name, (a, b) in cases.items():
        j = best_ms_per_frame(db_eval_iou, a, b, args.repeats)
        f = best_ms_per_frame(db_eval_boundary, a, b, args.repeats)
        print(f"{name:<8} {len(a):>6} {j:>9.2f} {f:>13.2f}")


if __name__ == "__main__":
    main()
