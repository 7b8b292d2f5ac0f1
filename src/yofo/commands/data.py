"""``yofo data stats``: counts and problems of a dataset split.

    yofo data stats data/synth --format ytvos --split valid
    yofo data stats /data/DAVIS --format davis --split val --annotators 1 --expressions first_frame --json
    yofo data stats /data/refer --format refcoco --dataset refcocog --split val --strict

prints videos, frames, objects, expressions, masks and every problem found (missing or unreadable frames
and masks, expressions whose obj_id has no mask, ...); ``--strict`` exits 1 when there is any problem.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "inspect datasets: `yofo data stats ROOT --format ytvos|davis|refcoco`"
DEFAULT_SPLITS = {"ytvos": "train", "davis": "val", "refcoco": "train"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    stats = sub.add_parser("stats", help="count videos, frames, objects, expressions, masks; list problems",
                           description="Count videos, frames, objects, expressions and masks of a dataset "
                           "split and list every problem found.")
    stats.add_argument("root", type=Path, help="dataset folder")
    stats.add_argument("--format", choices=tuple(DEFAULT_SPLITS), default="ytvos",
                       help="dataset format (default ytvos)")
    stats.add_argument("--split", help="split (default: train for ytvos and refcoco, val for davis)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--strict", action="store_true", help="exit 1 when any problem is found")
    stats.add_argument("--test-meta", default="", help="ytvos: test meta_expressions.json whose videos are left out")
    stats.add_argument("--annotators", type=int, nargs="+", default=[1, 2], help="davis: annotators (default 1 2)")
    stats.add_argument("--expressions", default="all", choices=("first_frame", "full_video", "all"),
                       help="davis: expression type (default all)")
    stats.add_argument("--gt", default="semi", choices=("semi", "unsupervised"),
                       help="davis: ground truth (default semi)")
    stats.add_argument("--dataset", default="refcoco", help="refcoco: refcoco, refcoco+ or refcocog (default refcoco)")
    stats.add_argument("--split-by", default="", help="refcoco: unc, umd or google (default unc; umd for refcocog)")
    stats.add_argument("--images", default="", help="refcoco: COCO train2014 folder")
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.data_command != "stats":
        args._parser.print_help()
        return 2
    from yofo.config import DatasetSpec
    from yofo.data.load import load_dataset
    from yofo.data.stats import dataset_stats

    spec = DatasetSpec(
        format=args.format, root=str(args.root), split=args.split or DEFAULT_SPLITS[args.format],
        test_meta=args.test_meta, annotators=args.annotators, expressions=args.expressions, gt=args.gt,
        dataset=args.dataset, split_by=args.split_by, images=args.images,
    )
    stats = dataset_stats(load_dataset(spec), progress=not args.json)
    if args.json:
        print(json.dumps({"root": str(args.root), "format": spec.format, "split": spec.split, **stats}, indent=1))
    else:
        print(f"{args.root} ({spec.format}, split {spec.split})")
        for key in ("videos", "frames", "objects", "expressions", "masks"):
            print(f"  {key:<12}{stats[key]:>9}")
        if "kinds" in stats:
            total = sum(stats["kinds"].values())
            for kind, count in stats["kinds"].items():
                print(f"  kind {kind:<26}{count:>6} ({count / total:.0%})")
        print(f"  {'problems':<12}{len(stats['problems']):>9}")
        for problem in stats["problems"]:
            print(f"  problem: {problem}")
    return 1 if args.strict and stats["problems"] else 0
