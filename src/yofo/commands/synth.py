"""``yofo synth``: write the synthetic referring-video benchmark (see :mod:`yofo.data.synthetic`).

    yofo synth data/synth --train 400 --valid 50 --seed 0 --size 96x160 --frames 16

The folder appears only when complete (written beside it, then renamed). A non-empty OUT is refused, unless
``--force`` and OUT is an earlier synthetic benchmark (it has ``synth.json``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from yofo.errors import InputError

HELP = "write the synthetic referring-video benchmark in the Ref-YouTube-VOS layout"


def parse_size(text: str) -> tuple[int, int]:
    """``"96x160"`` -> (96, 160) as (H, W)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise InputError(f"--size: '{text}' is not of the form HxW, e.g. 96x160")
    return int(match.group(1)), int(match.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (must be absent or empty)")
    parser.add_argument("--train", type=int, default=400, help="training videos (default 400)")
    parser.add_argument("--valid", type=int, default=50, help="validation videos (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--size", default="96x160", help="frame size HxW (default 96x160)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video, >= 6 (default 16)")
    parser.add_argument("--distractor-p", type=float, default=0.75,
                        help="chance that an object copies another's colour and/or shape (default 0.75)")
    parser.add_argument("--noise", type=float, default=0.03, help="pixel noise std as a fraction of 255 (default 0.03)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it is an earlier synthetic benchmark")


def run(args: argparse.Namespace) -> int:
    from yofo.data.synthetic import SynthOptions, synthesize

    options = SynthOptions(distractor_p=args.distractor_p, noise=args.noise)
    stats = synthesize(
        args.out, args.train, args.valid, args.seed, parse_size(args.size), args.frames, options,
        overwrite=args.force, progress=True,
    )
    cues = ", ".join(f"{cue} {share:.0%}" for cue, share in stats["cue_fraction"].items())
    print(
        f"wrote {args.train} train + {args.valid} valid videos, {stats['frames']} frames, {stats['objects']} objects, "
        f"{stats['expressions']} expressions -> {args.out}\n"
        f"expressions using {cues}; videos with a colour/shape distractor {stats['distractor_videos']:.0%}\n"
        f"{stats['seconds']:.1f} s, {stats['videos_per_s']:.1f} videos/s"
    )
    return 0
