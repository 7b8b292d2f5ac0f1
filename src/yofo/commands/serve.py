"""``yofo serve``: a local web page to segment a video from sentences (see :mod:`yofo.serve`).

    yofo serve                                            # the shipped checkpoint on http://127.0.0.1:7860
    yofo serve --checkpoint runs/paper/model.safetensors --port 8080 --max-frames 1200

Needs the optional extra ``web`` (Gradio): ``pip install -e '.[web]'``. Binds to 127.0.0.1 unless ``--host``
says otherwise (``--host 0.0.0.0`` makes the page reachable from other machines).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from yofo.threads import add_threads_argument, set_threads

HELP = "serve a local web page (Gradio) that segments a video from sentences"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/yofo-synthetic.safetensors"),
                        help="yofo .safetensors checkpoint (default: the shipped checkpoints/yofo-synthetic.safetensors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload in MB (default 100)")
    parser.add_argument("--max-frames", type=int, default=600, help="longest video in frames (default 600)")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from yofo.engine.checkpoint import read_metadata
    from yofo.errors import InputError

    try:  # not imported here: yofo.serve sets where Gradio keeps its files before importing it
        available = importlib.util.find_spec("gradio") is not None
    except ValueError:  # in sys.modules as None: unavailable
        available = False
    if not available:
        raise InputError("yofo serve needs Gradio, an optional extra: pip install -e '.[web]'")
    from yofo.serve import Limits, serve

    if args.max_upload_mb <= 0 or args.max_frames < 1 or not 0 < args.port < 65536:
        raise InputError(f"--max-upload-mb {args.max_upload_mb} must be > 0, --max-frames {args.max_frames} >= 1 "
                         f"and --port {args.port} in 1..65535")
    read_metadata(args.checkpoint)
    set_threads(args.threads)
    serve(args.checkpoint, args.host, args.port, Limits(args.max_upload_mb, args.max_frames))
    return 0
