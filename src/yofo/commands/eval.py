"""``yofo eval``: score a checkpoint (or saved predictions) on a dataset split (see :mod:`yofo.engine.evaluate`).

    yofo eval --checkpoint ckpt.safetensors --data data/synth --format synthetic --control shuffle --out eval/synth
    yofo eval --checkpoint ckpt.safetensors --data DAVIS --format davis --annotator both \\
        --expressions first_frame --protocol semi --out eval/davis-ff
    yofo eval --checkpoint ckpt.safetensors --data ref-youtube-vos --format ytvos --split valid \\
        --test-meta ref-youtube-vos/meta_expressions/test/meta_expressions.json --out eval/ytvos  # submission.zip
    yofo eval --predictions eval/synth/predictions --data data/synth --format synthetic --out eval/rescored
    torchrun --nproc_per_node 2 -m yofo eval ...          # videos sharded over the processes

Writes ``OUT/metrics.json``, ``OUT/per_object.csv`` and ``OUT/predictions/`` (palette PNGs), or
``OUT/submission.zip`` for a split without masks. The folder appears only when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yofo.threads import add_threads_argument, set_threads

HELP = "evaluate a checkpoint on Ref-YouTube-VOS, Ref-DAVIS17 or the synthetic benchmark (J, F, J&F)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="yofo .safetensors checkpoint to run")
    source.add_argument("--predictions", type=Path,
                        help="score saved predictions instead (laid out as OUT/predictions of an earlier run)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--format", required=True, choices=("ytvos", "synthetic", "davis"),
                        help="ytvos / synthetic: Ref-YouTube-VOS layout (synthetic adds per-kind results); "
                             "davis: DAVIS-2017 folders + davis_text_annotations")
    parser.add_argument("--split", default=None, help="split (default valid; davis: val)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default eval/<format>_<split>)")
    parser.add_argument("--annotator", default="1", choices=("1", "2", "both"),
                        help="davis: expressions of annotator 1, 2, or both scored separately and averaged")
    parser.add_argument("--expressions", default="first_frame", choices=("first_frame", "full_video"),
                        help="davis: expression type (default first_frame)")
    parser.add_argument("--protocol", default="semi", choices=("semi", "unsupervised"),
                        help="davis: semi = Annotations/480p, first and last frames not scored (RefVOS); "
                             "unsupervised = Annotations_unsupervised, all frames, Hungarian matching (ReferFormer)")
    parser.add_argument("--test-meta", type=Path, default=None,
                        help="ytvos: a test meta_expressions.json whose videos are left out of the split")
    parser.add_argument("--control", choices=("shuffle",), default=None,
                        help="ytvos / synthetic: also score each expression against another object of its video "
                             "(a language-blind control)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the control's shuffle (default 0)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from yofo.engine.evaluate import DEFAULT_SPLITS, evaluate

    set_threads(args.threads)
    split = args.split or DEFAULT_SPLITS[args.format]
    out = args.out or Path("eval") / f"{args.format}_{split}"
    result = evaluate(
        args.data, args.format, out, checkpoint=args.checkpoint, predictions=args.predictions, split=split,
        annotator=args.annotator, expression_type=args.expressions, protocol=args.protocol,
        test_meta=args.test_meta, control_seed=args.seed if args.control else None, device=args.device,
        max_videos=args.max_videos, progress=not args.no_progress,
    )
    if result is None:  # not rank 0
        return 0
    speed = result["speed"]
    timing = (f"{speed['videos']} videos, {speed['frames']} frames in {speed['seconds']:.1f} s "
              f"({speed['frames_per_s']:.2f} frames/s)")
    if "submission" in result:
        print(f"{timing}\nwrote {result['submission']['masks']} masks -> {out / result['submission']['file']}")
        return 0
    lines = [f"J&F {_fmt(result['J&F'])}  J {_fmt(result['J']['mean'])}  F {_fmt(result['F']['mean'])}  "
             f"({result['objects']} objects)"]
    for group in ("per_annotator", "per_cue"):
        for name, value in result.get(group, {}).items():
            lines.append(f"  {group[4:]} {name}: J&F {_fmt(value['J&F'])} ({value['objects']} objects)")
    if "control" in result:
        lines.append(f"  shuffle control: J&F {_fmt(result['control']['J&F'])}")
    if result.get("motion_blind"):
        blind = result["motion_blind"]
        lines.append(f"  needing motion: J&F {_fmt(blind['J&F'])} ({blind['expressions']} objects); a perfect "
                     f"motion-blind model: {_fmt(blind['chance'])} on them, {_fmt(blind['bound'])} overall")
    if result.get("grounding"):
        g = result["grounding"]
        lines.append(f"  grounding: {g['grounded']} of {g['sentences']} sentences ({100 * g['share']:.0f} %) on "
                     f"their own object (J >= {g['min_j']}) and {g['margin']} above every other one")
    print("\n".join(lines) + f"\n{timing}\nwrote {out}")
    return 0
