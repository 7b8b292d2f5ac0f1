"""``yofo segment``: segment the objects that sentences describe in a video, an image folder or an image.

    yofo segment video.mp4 --checkpoint model.safetensors --text "a black swan" --text "the duck" \\
        --out masks/ --overlay

writes ``masks/<frame>.png`` (palette PNGs; object k = sentence k, overlaps go to the highest score),
``masks/sentences.json`` ({k: sentence}) and, with ``--overlay``, ``masks/overlay.mp4`` (coloured masks and
a legend). The folder appears only when every frame is done (an interrupted run leaves none, and an earlier
folder untouched); a non-empty existing one is replaced only with ``--overwrite``, and a second run into the
same folder while one is writing it fails (exit 2). Progress goes to stderr, the summary line to stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from yofo.threads import add_threads_argument, set_threads

HELP = "segment the objects that sentences describe in a video (mp4/mov/avi/webm/mkv, frame folder or image)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file, folder of jpg/png frames, or one image")
    parser.add_argument("--checkpoint", type=Path, required=True, help="yofo .safetensors checkpoint")
    parser.add_argument(
        "--text", action="append", required=True, metavar="SENTENCE",
        help="a sentence describing one object; repeat for several objects (object k = k-th --text)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (absent or empty, or --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out when the run succeeds")
    parser.add_argument("--overlay", action="store_true", help="also write overlay.mp4 with coloured masks")
    parser.add_argument("--stride", type=int, default=1, help="segment every N-th frame (default 1)")
    parser.add_argument("--threshold", type=float, default=0.0, help="mask = logit > threshold (default 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from yofo.engine.checkpoint import load_model, read_metadata
    from yofo.predictor import VideoSegmenter, check_texts, segment_to_folder
    from yofo.video_io import atomic_output_dir, open_video

    texts = check_texts(args.text)  # every input is checked before the output folder and the slow steps
    source = open_video(args.video, stride=args.stride)
    read_metadata(args.checkpoint)
    threads = set_threads(args.threads)
    with atomic_output_dir(args.out, overwrite=args.overwrite) as out:  # locked from here: a second run fails now
        segmenter = VideoSegmenter(load_model(args.checkpoint), device=args.device, threshold=args.threshold)
        segmenter.check_footage(args.video)
        start = time.perf_counter()
        with tqdm(source.iter_named(), total=source.num_frames, desc="segment", unit="frame", dynamic_ncols=True,
                  disable=True if args.no_progress else None) as frames:
            count = segment_to_folder(segmenter, frames, texts, out, (source.fps or 25.0) if args.overlay else None,
                                      name=str(args.video))
        seconds = time.perf_counter() - start
    print(f"segmented {count} frames x {len(texts)} sentences in {seconds:.1f} s "
          f"({count / seconds:.2f} frames/s, {threads} thread(s)) -> {args.out}")
    return 0
