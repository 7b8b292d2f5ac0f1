"""``yofo demo``: evaluate the shipped checkpoint on the synthetic benchmark and write a report (see :mod:`yofo.demo`).

    yofo demo --out demo_out                  # checkpoints/yofo-synthetic.safetensors; what `make demo` runs
    yofo demo --train --minutes 20            # train a new model with configs/demo.yaml first

Writes ``OUT/report.md``, ``OUT/metrics.json``, ``OUT/overlays/*.mp4``, ``OUT/training_curve.png`` and
``OUT/eval/`` (``yofo eval``'s output). The folder appears only when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yofo.threads import add_threads_argument

HELP = "demo: evaluate the shipped synthetic-benchmark model, render overlays and write report.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model to demonstrate (default: the shipped checkpoints/yofo-synthetic.safetensors)")
    parser.add_argument("--training-log", type=Path, default=None,
                        help="its training log (metrics.csv) for the curve (default: CHECKPOINT with .csv)")
    parser.add_argument("--train", action="store_true", help="train a new model (configs/demo.yaml) first")
    parser.add_argument("--minutes", type=float, default=None,
                        help="with --train: training time budget (default: the config's full schedule)")
    parser.add_argument("--videos", type=int, default=3, help="valid videos rendered as overlay MP4s (default 3)")
    parser.add_argument("--valid", type=int, default=None,
                        help="valid videos synthesized and evaluated (default: the benchmark's, 50)")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from yofo.demo import DEFAULT_CHECKPOINT, run_demo

    summary = run_demo(
        args.out, args.checkpoint or DEFAULT_CHECKPOINT, args.training_log, train=args.train, minutes=args.minutes, videos=args.videos,
        valid=args.valid, threads=args.threads, progress=not args.no_progress,
    )
    ev = summary["evaluation"]
    print(f"J&F {ev['J&F']:.3f} on {summary['data']['valid']} synthetic valid videos ({ev['objects']} expressions); "
          f"shuffled-sentence control {ev['control']['J&F']:.3f}\n"
          f"wrote {args.out}/report.md in {summary['seconds']:.0f} s")
    return 0
