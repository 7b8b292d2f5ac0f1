"""``yofo bench``: speed and memory of streaming inference.

    yofo bench --config paper --size 384x640 --frames 32 --objects 1,4 --json

measures in one run (frames synthesised on the fly, never held in memory):

* the full pipeline (:class:`yofo.predictor.VideoSegmenter` ``step``: pre-processing, model, un-padding and
  resizing the logits) for each number of sentences K, ms per frame, with a split per component;
* the image encoder alone, ms per frame, timed between the pipeline's frames so that both see the same
  load (the machine may be shared); for a config whose encoder is not the paper's ResNet-50 (``lite``), a
  ResNet-50 encoder too, timed the same way at the same size, so that ratios to it are side by side;
* the arithmetic of both, GFLOP per frame (:func:`count_gflops`), which bounds what any implementation of
  the same model can reach: the time ratio of pipeline and encoder cannot drop much below their FLOP ratio
  unless the parts after the encoder run at a higher FLOP rate than the encoder itself;
* the peak resident memory of streaming a short and a long video, each in a fresh process (a peak only
  grows within a process), as that process's own peak (:func:`peak_rss_mb`).

Warm-up frames are not timed; the first frame of a video runs the long solver schedule (brief §2.4), so the
figures are the steady state. Text encoding runs once per sentence per video and is not part of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from yofo.errors import ConfigError, InputError
from yofo.threads import DEFAULT_THREADS, add_threads_argument, set_threads

HELP = "measure inference speed (image encoder, full pipeline per number of sentences) and peak memory"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must list positive integers")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not of the form HxW, e.g. 384x640") from None
    if min(height, width) < 32:
        raise argparse.ArgumentTypeError(f"'{text}': height and width must be at least 32")
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.memory.size=1")
    parser.add_argument("--config", default="paper", help="config name or YAML path (default paper; random weights)")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint instead of a randomly initialised --config")
    parser.add_argument("--size", type=_size, default=(384, 640), help="frame size HxW (default 384x640)")
    parser.add_argument("--frames", type=int, default=32, help="timed frames per measurement (default 32)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames before each measurement (default 2)")
    parser.add_argument("--objects", type=_int_list, default=[1, 4], help="numbers of sentences (default 1,4)")
    parser.add_argument(
        "--memory-frames", type=_int_list, default=[32, 256],
        help="video lengths for peak memory, each in a fresh process (default 32,256)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="channels-last memory format (default: as VideoSegmenter, on CPU only)",
    )
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


@dataclass(frozen=True)
class BenchSpec:
    """What to build and how to feed it; picklable, so child processes rebuild the same model."""

    config: str
    overrides: tuple[str, ...]
    checkpoint: str | None
    size: tuple[int, int]
    device: str
    channels_last: bool | None = None
    threads: int = DEFAULT_THREADS  # torch CPU threads (yofo.threads), in every process that measures


def build_bench_model(spec: BenchSpec):
    """Build the model to measure; returns ``(model, text_encoder_name, note)``.

    Random weights from ``spec.config`` unless a checkpoint is given. When the configured text encoder is
    not available offline (``paper`` names bert-base-uncased), the bundled all-MiniLM-L6-v2 replaces it:
    the text encoder runs once per sentence per video, so the per-frame figures do not depend on it.
    """
    from yofo.config import load_config
    from yofo.engine.checkpoint import load_model
    from yofo.model.text_encoder import BUNDLED
    from yofo.model.yofo import build_model

    if spec.checkpoint:
        model = load_model(spec.checkpoint)
        return model, model.cfg.text_encoder.name, ""
    cfg = load_config(spec.config, spec.overrides).model
    try:
        return build_model(cfg), cfg.text_encoder.name, ""
    except ConfigError as err:
        if not str(err).startswith("model.text_encoder.name") or cfg.text_encoder.name == BUNDLED:
            raise
    note = (f"text encoder '{cfg.text_encoder.name}' is not available locally; using the bundled {BUNDLED} "
            f"(text is encoded once per sentence, outside the per-frame figures)")
    cfg.text_encoder.name = BUNDLED
    return build_model(cfg), BUNDLED, note


def bench_segmenter(spec: BenchSpec, model):
    """The :class:`yofo.predictor.VideoSegmenter` that is measured: ``spec``'s device, frame size and memory format."""
    from yofo.predictor import VideoSegmenter

    return VideoSegmenter(model, device=spec.device, input_size=spec.size, channels_last=spec.channels_last)


def synthetic_frames(size: tuple[int, int], count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield ``count`` uint8 RGB frames (H, W, 3), one at a time: a random texture sliding sideways."""
    base = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    for t in range(count):
        yield np.roll(base, 8 * t, axis=1)


def sentences(count: int) -> list[str]:
    """``count`` distinct sentences."""
    return [f"the object number {k} moving to the left" for k in range(1, count + 1)]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_components(model) -> Iterator[dict[str, float]]:
    """Accumulate wall time per model component while the block runs: ``{name: seconds}``.

    Per frame (shared by the sentences): image encoder, Φ, the image-only parts of feature mining and
    the decoder, and with motion-aware feature mining its motion map. Per frame × sentence: feature mining's
    Y/W, the solver, the rest of the decoder.
    """
    targets = [
        ("image_encoder", model.image_encoder, "forward"),
        ("fm_image_part", model.feature_mining, "image_part"),
        ("fm_text_part", model.feature_mining, "forward"),
        ("decoder_image_part", model.decoder, "image_part"),
        ("decoder_text_part", model.decoder, "forward"),
    ]
    if model.feature_mining.motion is not None:
        targets.append(("motion_map", model.feature_mining, "motion_map"))
    if model.meta_transfer is not None:
        targets += [("phi", model.meta_transfer, "features"), ("solver", model.meta_transfer, "solve")]
    totals = {name: 0.0 for name, _, _ in targets}

    def wrap(name, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = method(*args, **kwargs)
            totals[name] += time.perf_counter() - start
            return out

        return timed

    for name, module, attr in targets:  # instance attributes shadow the class's methods until deleted
        object.__setattr__(module, attr, wrap(name, getattr(module, attr)))
    try:
        yield totals
    finally:
        for _, module, attr in targets:
            object.__delattr__(module, attr)


def count_gflops(function, *args) -> float:
    """GFLOP of one call ``function(*args)``: convolutions and matrix products (``torch.utils.flop_counter``).

    A multiply-add counts two FLOPs. Element-wise operations, softmax and resampling are not counted; in this
    model they are a small share of the arithmetic but not of the time (they are memory-bound).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function(*args)
    return counter.get_total_flops() / 1e9


def resnet50_reference(model, segmenter):
    """A ResNet-50 encoder (random weights, the paper's) in the segmenter's device and memory format, or
    ``None`` when the model's own encoder is one already."""
    from yofo.model.image_encoder import ResNet

    enc = model.cfg.image_encoder
    if enc.arch == "resnet50" and enc.width == 64:
        return None
    reference = ResNet("resnet50", 64, enc.output_stride).eval().to(segmenter.device)
    return reference.to(memory_format=segmenter.memory_format)


def time_pipeline(segmenter, size: tuple[int, int], objects: int, frames: int, warmup: int, reference=None) -> dict:
    """Time ``segmenter.step_logits`` with ``objects`` sentences and the image encoder alone.

    The encoder alone (and the ``reference`` encoder, when given) runs on the padded, normalised frame just
    before each pipeline step, so on a shared machine all figures see the same load and their ratios stay
    meaningful.

    Returns:
        ``{"image_encoder": ms, "pipeline": ms, "components": {name: ms}, "gflops": {"image_encoder": GFLOP,
        "pipeline": GFLOP}}``, all per frame, with ``"reference_encoder"`` ms and GFLOP when a reference is
        given; the FLOPs are counted on one more (steady-state) frame.
    """
    import torch

    from yofo.predictor import fit_size

    model, device = segmenter.model, segmenter.device
    _, padded = fit_size(*size, segmenter.input_size)
    image = torch.randn(1, 3, *padded, device=device).contiguous(memory_format=segmenter.memory_format)
    segmenter.start(sentences(objects))
    video = synthetic_frames(size, warmup + frames)
    with torch.inference_mode():
        encoders = [model.image_encoder] + ([reference] if reference is not None else [])
        for frame in (next(video) for _ in range(warmup)):
            segmenter.step_logits(frame)
            for encoder_module in encoders:
                encoder_module(image)
        encoder_times = [0.0] * len(encoders)
        pipeline = 0.0
        components: dict[str, float] = {}
        for frame in video:
            for i, encoder_module in enumerate(encoders):
                _sync(device)
                start = time.perf_counter()
                encoder_module(image)
                _sync(device)
                encoder_times[i] += time.perf_counter() - start
            with timed_components(model) as totals:
                start = time.perf_counter()
                segmenter.step_logits(frame)
                _sync(device)
                pipeline += time.perf_counter() - start
            for name, seconds in totals.items():
                components[name] = components.get(name, 0.0) + seconds
        gflops = {"image_encoder": count_gflops(model.image_encoder, image),
                  "pipeline": count_gflops(segmenter.step_logits, next(synthetic_frames(size, 1)))}
        if reference is not None:
            gflops["reference_encoder"] = count_gflops(reference, image)
    components["other"] = pipeline - sum(components.values())  # pre/post-processing, T(Φ; θ), memory
    per_frame = 1000 / frames
    result = {
        "image_encoder": encoder_times[0] * per_frame,
        "pipeline": pipeline * per_frame,
        "components": {name: seconds * per_frame for name, seconds in components.items()},
        "gflops": gflops,
    }
    if reference is not None:
        result["reference_encoder"] = encoder_times[1] * per_frame
    return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB, since it started its program.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: it survives ``exec``, so a spawned child
    would report at least the size of its parent when it was spawned. Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def peak_rss_child(spec: dict, objects: int, length: int) -> float:
    """In a fresh process: stream ``length`` frames with ``objects`` sentences; peak RSS in MB."""
    spec = BenchSpec(**spec)
    set_threads(spec.threads)
    segmenter = bench_segmenter(spec, build_bench_model(spec)[0])
    segmenter.start(sentences(objects))
    for frame in synthetic_frames(spec.size, length):
        segmenter.step_logits(frame)
    return peak_rss_mb()


def measure_peak_rss(spec: BenchSpec, objects: int, lengths: list[int]) -> dict[str, float]:
    """Peak RSS (MB) of :func:`peak_rss_child` for each video length, each in its own spawned process.

    The processes run concurrently (only wall time is shared; each reports its own peak) and are never
    reused (``max_tasks_per_child=1``), so no figure carries another run's peak.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(lengths), mp_context=context, max_tasks_per_child=1) as pool:
        futures = {length: pool.submit(peak_rss_child, asdict(spec), objects, length) for length in lengths}
        return {str(length): future.result() for length, future in futures.items()}


def run(args: argparse.Namespace) -> int:
    from yofo.engine.distributed import resolve_device

    if args.frames < 1 or args.warmup < 0:
        raise InputError(f"--frames {args.frames} must be >= 1 and --warmup {args.warmup} >= 0")
    if args.checkpoint and args.overrides:
        raise InputError("config overrides apply to --config; a --checkpoint carries its own model config")
    resolve_device(args.device)  # a bad device fails here, not in a child process
    spec = BenchSpec(args.config, tuple(args.overrides), args.checkpoint, args.size, args.device, args.channels_last,
                     args.threads)
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else print

    import torch

    set_threads(spec.threads)
    model, text_encoder, note = build_bench_model(spec)
    segmenter = bench_segmenter(spec, model)
    if note:
        log(f"note: {note}")
    reference = resnet50_reference(model, segmenter)
    beside = " and a ResNet-50 encoder" if reference is not None else ""
    timings = {}
    for objects in args.objects:
        log(f"timing the pipeline with {objects} sentence(s), the image encoder alone{beside} ({args.frames} frames)")
        timings[str(objects)] = time_pipeline(segmenter, args.size, objects, args.frames, args.warmup, reference)
    encoder_ms = sum(t["image_encoder"] for t in timings.values()) / len(timings)
    pipeline = {k: t["pipeline"] for k, t in timings.items()}
    components = {k: t["components"] for k, t in timings.items()}
    memory_objects = min(args.objects)
    log(f"peak memory of {', '.join(map(str, args.memory_frames))}-frame videos with {memory_objects} "
        f"sentence(s), each in a new process")
    peak = measure_peak_rss(spec, memory_objects, args.memory_frames)

    result = {
        "config": args.checkpoint or args.config,
        "text_encoder": text_encoder,
        "text_encoder_note": note,
        "device": str(segmenter.device),
        "threads": torch.get_num_threads(),
        "channels_last": segmenter.memory_format == torch.channels_last,
        "size": list(args.size),
        "frames": args.frames,
        "warmup": args.warmup,
        "image_encoder_ms": encoder_ms,
        "pipeline_ms": pipeline,
        "pipeline_fps": {k: 1000 / v for k, v in pipeline.items()},
        # each pipeline against the encoder timed alongside it (same machine load)
        "pipeline_vs_image_encoder": {k: t["pipeline"] / t["image_encoder"] for k, t in timings.items()},
        "components_ms": components,
        # arithmetic per frame (convolutions and matrix products), the floor under the time ratio above
        "gflops": {"image_encoder": timings[str(args.objects[0])]["gflops"]["image_encoder"],
                   "pipeline": {k: t["gflops"]["pipeline"] for k, t in timings.items()}},
        "memory_objects": memory_objects,
        "peak_rss_mb": peak,
    }
    if reference is not None:  # the paper's encoder at the same size, timed alongside each pipeline
        result["resnet50_encoder_ms"] = sum(t["reference_encoder"] for t in timings.values()) / len(timings)
        result["pipeline_vs_resnet50_encoder"] = {k: t["pipeline"] / t["reference_encoder"] for k, t in timings.items()}
        result["gflops"]["resnet50_encoder"] = timings[str(args.objects[0])]["gflops"]["reference_encoder"]
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['config']} at {args.size[0]}x{args.size[1]} on {result['device']} "
          f"({result['threads']} threads), text encoder {text_encoder}")
    gflops = result["gflops"]
    print(f"image encoder alone: {encoder_ms:8.1f} ms/frame  {gflops['image_encoder']:.3g} GFLOP/frame")
    for k, ms in pipeline.items():
        split = ", ".join(f"{name} {value:.1f}" for name, value in components[k].items())
        flops = gflops["pipeline"][k]
        print(f"pipeline, {k:>2} sentence(s): {ms:8.1f} ms/frame  {1000 / ms:6.2f} frames/s  "
              f"{result['pipeline_vs_image_encoder'][k]:4.2f}x encoder  {flops:.3g} GFLOP/frame "
              f"({flops / gflops['image_encoder']:4.2f}x encoder)  [{split}]")
    if reference is not None:
        ratios = ", ".join(f"{k} sentence(s) {v:4.2f}x" for k, v in result["pipeline_vs_resnet50_encoder"].items())
        print(f"ResNet-50 encoder at the same size: {result['resnet50_encoder_ms']:8.1f} ms/frame  "
              f"{gflops['resnet50_encoder']:.3g} GFLOP/frame; pipeline vs it: {ratios}")
    for length, mb in peak.items():
        print(f"peak RSS, {length:>4} frames: {mb:8.1f} MB")
    return 0
