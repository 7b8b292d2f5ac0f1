"""``yofo train``: train YOFO from a config (see :mod:`yofo.engine.train`).

    yofo train demo data.root=data/synth                      # -> runs/demo/model.safetensors
    yofo train paper --out runs/paper data.datasets.0.root=/data/ref-youtube-vos ...
    yofo train demo --out runs/demo --resume data.root=data/synth       # after a crash or a kill
    torchrun --nproc_per_node 2 -m yofo train demo data.root=data/synth # DDP, one process per GPU/core

A fresh run refuses a folder that already holds a checkpoint; ``--resume`` continues from its newest
checkpoint (or starts a new run when there is none) and ends with the weights an uninterrupted run would have;
it refuses another model, other data or other training settings than the run's (:mod:`yofo.engine.train`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train YOFO from a config: two stages, resumable, DDP under torchrun"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name (paper, lite, tiny, demo, demo-scratch) or YAML path")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.root=data/synth train.batch_size=8")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps in total (final checkpoint included)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.csv)")


def run(args: argparse.Namespace) -> int:
    from yofo.config import load_config, resolve_config_path
    from yofo.engine.train import train

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / resolve_config_path(args.config).stem
    train(cfg, out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    return 0
