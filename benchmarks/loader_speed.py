"""Clips per second of the training data loader alone (no model), for a number of DataLoader workers.

Usage:
  .venv/bin/python benchmarks/loader_speed.py --data data/synth-480x864 --workers 0,2 [--batches 20] [--json]

Loads ``configs/<--config>.yaml`` (default ``paper``: 4-frame clips at 480×864 with its augmentation) with
``data.root=--data`` and the extra ``key=value`` overrides, and iterates a DataLoader over
:class:`yofo.data.clips.ClipDataset` exactly as ``yofo train`` builds it (batches of ``train.batch_size``
clips, the same sampler), timing ``--batches`` batches after ``--warmup`` for each worker count.
``--data`` is synthesized at ``--size`` (default 480x864, so that frames are read at the training size,
without resizing) when absent.

The frame cache is off by default (``data.cache_mb=0``): a real training set (3,471 Ref-YouTube-VOS
videos) is far larger than the cache, so nearly every frame is decoded from its JPEG, as here. Give
``data.cache_mb=512`` to measure the other extreme.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torch.utils.data import DataLoader

from yofo.config import load_config
from yofo.data.clips import ClipDataset
from yofo.data.synthetic import synthesize
from yofo.engine.train import StepSampler


def clips_per_second(cfg, workers: int, batches: int, warmup: int) -> float:
    """Clips/s of ``batches`` batches of the training loader with ``workers`` processes, after ``warmup``."""
    batch = int(cfg.train.batch_size)
    loader = DataLoader(ClipDataset(cfg, seed=cfg.train.seed),
                        batch_sampler=StepSampler(0, warmup + batches, batch, 0, 1), num_workers=workers)
    iterator = iter(loader)
    for _ in range(warmup):  # worker start-up and first reads
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Ref-YouTube-VOS-layout folder (synthesized if absent)")
    parser.add_argument("--config", default="paper", help="config name or YAML (default paper)")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts (default 0,2)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (default 2)")
    parser.add_argument("--size", default="480x864", help="frame size HxW when synthesizing --data (default 480x864)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()

    if not args.data.exists():
        height, width = (int(v) for v in args.size.split("x"))
        synthesize(args.data, train=40, valid=1, seed=0, size=(height, width), frames=16, progress=True)
    cfg = load_config(args.config, [f"data.root={args.data}", "data.cache_mb=0", *args.overrides])
    size = list(cfg.model.input_size)
    result = {"config": args.config, "input_size": size, "num_frames": int(cfg.data.num_frames),
              "batch_size": int(cfg.train.batch_size), "batches": args.batches, "clips_per_s": {}}
    for workers in (int(w) for w in args.workers.split(",")):
        result["clips_per_s"][str(workers)] = round(clips_per_second(cfg, workers, args.batches, args.warmup), 3)
        if not args.json:
            print(f"{workers} worker(s): {result['clips_per_s'][str(workers)]:.2f} clips/s "
                  f"({cfg.data.num_frames} frames at {size[0]}x{size[1]}, batch {cfg.train.batch_size})")
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
