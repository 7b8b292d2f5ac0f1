"""``yofo info``: what a checkpoint is and what it knows.

    yofo info checkpoints/yofo-synthetic.safetensors          # size, sha256, training data, model config
    yofo info runs/demo/model.safetensors --json

prints the file's size and sha256, the step it was saved at, what the model was trained on (the datasets
the trainer recorded, or "yofo synthetic benchmark") and its model config
(:func:`yofo.engine.checkpoint.checkpoint_info`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show a checkpoint's training data, model config, sha256 and size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="yofo .safetensors checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from yofo.config import flatten_config
    from yofo.engine.checkpoint import checkpoint_info

    info = checkpoint_info(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    trained_on = info["trained_on"]
    lines = [
        f"checkpoint   {info['checkpoint']}",
        f"size         {info['size_bytes'] / 1e6:.1f} MB ({info['size_bytes']:,} bytes)",
        f"sha256       {info['sha256']}",
        f"trained on   {trained_on['summary']}",
        f"step         {info['step'] if info['step'] is not None else 'not recorded'}",
        f"yofo         {info['yofo_version']}",
        "model config",
        *(f"  {key}: {value}" for key, value in flatten_config(info["config"]).items()),
    ]
    if trained_on["synthetic_only"]:
        lines.insert(4, "             it knows only the benchmark's coloured shapes, not real video "
                        "(README, \"Segment your own video\")")
    print("\n".join(lines))
    return 0
