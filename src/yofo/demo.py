"""The demo: evaluate the shipped checkpoint on the synthetic benchmark and show what it does.

    from yofo.demo import run_demo
    summary = run_demo("demo_out")            # what `make demo` / `yofo demo --out demo_out` runs

Steps:

1. synthesize the valid split of the synthetic benchmark (:mod:`yofo.data.synthetic`) with the generator
   settings the checkpoint was trained with: the ``synth`` entry of its metadata (the content of the
   benchmark's ``synth.json``) when present, else ``yofo synth``'s defaults, which ``configs/demo.yaml``
   documents; only the valid videos are written (a valid video does not depend on the number of train videos);
2. evaluate the checkpoint on it (:func:`yofo.engine.evaluate.evaluate`): J&F overall, per expression kind,
   per cue and by what single-cue expressions name, J at each video's first frames, the grounding check and
   the language-blind control (each video's expressions shuffled among its objects);
3. segment a few valid videos into overlay MP4s: the frame untouched, the model's masks and the ground
   truth side by side, one sentence per object listed in a strip below;
4. plot the training curve from the training log shipped beside the checkpoint (``<checkpoint>.csv``);
5. write ``report.md`` and ``metrics.json``.

``train=True`` first trains a new model with ``configs/demo.yaml`` on a freshly synthesized benchmark
(optionally within a time budget) and demonstrates that one instead.

Output folder (written in a temporary folder beside it and moved into place when complete)::

    OUT/report.md  OUT/metrics.json  OUT/training_curve.png  OUT/overlays/<video>.mp4
    OUT/eval/      metrics.json, per_object.csv, predictions/ (yofo eval's output)
    OUT/train/     with train=True: the training run (model.safetensors, metrics.csv, config.yaml)
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from yofo.config import load_config
from yofo.data.records import Expression, Video, read_frame, read_mask
from yofo.data.synthetic import SynthOptions, synthesize
from yofo.data.ytvos import load_ytvos
from yofo.engine.checkpoint import load_model, read_metadata
from yofo.engine.evaluate import evaluate
from yofo.engine.train import stage_steps
from yofo.engine.train import train as train_model
from yofo.errors import CheckpointError, InputError
from yofo.predictor import VideoSegmenter, label_map
from yofo.threads import DEFAULT_THREADS, set_threads
from yofo.video_io import DAVIS_PALETTE, Mp4Writer, atomic_output_dir, render_overlay

DEFAULT_CHECKPOINT = Path("checkpoints/yofo-synthetic.safetensors")
CONFIG = "demo"
# `yofo synth`'s defaults: the benchmark configs/demo.yaml is trained on (`yofo synth data/synth`).
DEFAULT_SYNTH: dict[str, Any] = {"seed": 0, "size": [96, 160], "frames": 16, "train": 400, "valid": 50,
                                 "options": asdict(SynthOptions())}
TARGET_JF = 0.75  # the J&F the shipped model should reach on the synthetic valid split
CALIBRATION_STEPS = 10  # steps timed before a training run with a time budget
OVERLAY_SCALE = 3  # the 96×160 benchmark frames are enlarged so that the masks' edges can be seen
OVERLAY_FPS = 4.0


# ------------------------------------------------------------------------------------------- settings
def synth_settings(checkpoint: str | Path | None) -> dict[str, Any]:
    """Generator settings of the benchmark a checkpoint was trained on (see the module docstring).

    Returns:
        ``{"seed", "size", "frames", "train", "valid", "options", "source"}``; ``source`` says where they come from.
    """
    if checkpoint is not None and "synth" in (meta := read_metadata(checkpoint)):
        try:
            stored = json.loads(meta["synth"])
            settings = {**DEFAULT_SYNTH, **{k: stored[k] for k in DEFAULT_SYNTH if k in stored}}
            settings["options"] = {**DEFAULT_SYNTH["options"], **stored.get("options", {})}
            _options(settings)
        except (json.JSONDecodeError, TypeError, AttributeError):
            raise CheckpointError(f"{checkpoint}: metadata field 'synth' is not a synth.json object") from None
        return {**settings, "source": f"{checkpoint} metadata"}
    return {**DEFAULT_SYNTH, "source": "yofo synth defaults"}


def _options(settings: dict[str, Any]) -> SynthOptions:
    options = dict(settings["options"])
    options["motion_p"] = tuple(options["motion_p"])
    return SynthOptions(**options)


def _synthesize(root: Path, settings: dict[str, Any], train: int, valid: int, progress: bool) -> None:
    synthesize(root, train=train, valid=valid, seed=settings["seed"], size=tuple(settings["size"]),
               frames=settings["frames"], options=_options(settings), progress=progress)


# ------------------------------------------------------------------------------------------- training
def _run_training(data: Path, out: Path, minutes: float | None, progress: bool) -> dict[str, Any]:
    """Train ``configs/demo.yaml`` on ``data`` into ``out``; within ``minutes`` when given.

    The trainer counts steps, not seconds, so a budget is met by timing :data:`CALIBRATION_STEPS` steps in a
    scratch run, then compressing the schedule: the iterations per epoch shrink so that every epoch (and
    so every milestone and the stage-2 switch) fits in the remaining time. The schedule is never stretched
    beyond the config's.
    """
    overrides = [f"data.root={data}"]
    cfg = load_config(CONFIG, overrides)
    info: dict[str, Any] = {"config": CONFIG, "overrides": []}  # besides data.root
    start = time.perf_counter()
    if minutes is not None:
        with tempfile.TemporaryDirectory(prefix="yofo-calibrate-") as scratch:
            train_model(cfg, scratch, max_steps=CALIBRATION_STEPS, progress=False)
            with open(Path(scratch) / "metrics.csv", newline="") as handle:
                seconds_per_step = float(list(csv.DictReader(handle))[-1]["elapsed"]) / CALIBRATION_STEPS
        epochs = cfg.train.stage1.epochs + cfg.train.stage2.epochs
        affordable = int((minutes * 60 - (time.perf_counter() - start)) / seconds_per_step)
        per_epoch = max(1, min(cfg.train.iters_per_epoch, affordable // max(1, epochs)))
        overrides.append(f"train.iters_per_epoch={per_epoch}")
        cfg = load_config(CONFIG, overrides)
        info |= {"overrides": overrides[1:], "minutes": minutes, "seconds_per_step": round(seconds_per_step, 3)}
    info["steps"] = sum(stage_steps(cfg.train))
    train_model(cfg, out, progress=progress)
    info["seconds"] = round(time.perf_counter() - start, 1)
    return info


# ------------------------------------------------------------------------------------------- overlays
def _enlarge(image: np.ndarray, resample: int) -> np.ndarray:
    height, width = image.shape[:2]
    size = (width * OVERLAY_SCALE, height * OVERLAY_SCALE)
    return np.asarray(Image.fromarray(image).resize(size, resample))


def legend_strip(labels: list[str], width: int, panel_height: int) -> np.ndarray:
    """A black strip listing the sentences, one line each: the k-th palette colour's swatch, ``k.`` and the text.

    The font follows the video's height (1/16 of a panel, at least 12 px), the lines fill up to two
    columns, so four sentences take two lines and the strip stays a strip (about a fifth of a panel);
    sentences wider than their column are ellipsised.

    Returns:
        uint8 RGB ``(h, width, 3)``.
    """
    font_size = max(12, panel_height // 16)
    font = ImageFont.load_default(size=font_size)
    margin, columns = font_size // 2, 2 if len(labels) > 1 else 1
    rows = -(-len(labels) // columns)
    column_width = width // columns
    image = Image.new("RGB", (width, rows * (font_size + margin) + margin))
    draw = ImageDraw.Draw(image)
    for k, label in enumerate(labels):
        left, top = (k // rows) * column_width + margin, margin + (k % rows) * (font_size + margin)
        text, room = f"{k + 1}. {label}", column_width - 3 * margin - font_size
        while text and draw.textlength(text, font=font) > room:
            text = text[:-2] + "…" if len(text) > 1 else ""
        draw.rectangle((left, top, left + font_size, top + font_size), fill=tuple(int(c) for c in DAVIS_PALETTE[k + 1]))
        draw.text((left + font_size + margin, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def overlay_frame(frame: np.ndarray, predicted: np.ndarray, truth: np.ndarray, labels: list[str]) -> np.ndarray:
    """One overlay frame: the frame untouched | yofo's masks | the ground truth, then the legend strip below.

    The first panel shows the objects' own colours (what "the red shape" refers to); the other two tint
    object k in the k-th palette colour, the colour of sentence k in the legend. Everything is enlarged
    :data:`OVERLAY_SCALE` × (nearest-neighbour for the masks, so their edges stay where the model put them).

    Args:
        frame: uint8 RGB ``(H, W, 3)``.
        predicted, truth: ids ``(H, W)``, 0 background, k = sentence k.
        labels: the sentences.

    Returns:
        uint8 RGB ``(S·H + h, 3·S·W, 3)`` with S = :data:`OVERLAY_SCALE` and h the legend strip's height.
    """
    big = _enlarge(frame, Image.BILINEAR)
    panels = [big] + [render_overlay(big, _enlarge(ids.astype(np.uint8), Image.NEAREST), []) for ids in (predicted, truth)]
    row = np.concatenate(panels, axis=1)
    return np.concatenate([row, legend_strip(labels, row.shape[1], big.shape[0])], axis=0)


def write_overlay(segmenter: VideoSegmenter, video: Video, path: Path) -> list[str]:
    """Segment one sentence per object of ``video`` (its first expression) and write a side-by-side MP4.

    Each frame is :func:`overlay_frame`: the frame untouched, the model's masks merged per pixel (highest
    logit above the threshold wins), the ground truth in the same colours, and the sentences below.
    Returns the sentences, sentence k's colour being the k-th palette colour.
    """
    first: dict[int, Expression] = {}
    for e in video.expressions:
        first.setdefault(e.obj_id, e)
    chosen = [first[obj_id] for obj_id in sorted(first)]
    texts = list(dict.fromkeys(e.text for e in chosen))
    colour = np.zeros(256, dtype=np.uint8)  # ground-truth object id -> its sentence's colour
    for e in chosen:
        colour[e.obj_id] = texts.index(e.text) + 1
    segmenter.start(texts)
    with Mp4Writer(path, fps=OVERLAY_FPS) as writer:
        for frame_path, mask_path in zip(video.frame_paths, video.mask_paths):
            frame = read_frame(frame_path)
            predicted = label_map(segmenter.step_logits(frame), segmenter.threshold)
            truth = colour[read_mask(mask_path)] if mask_path is not None else np.zeros_like(predicted)
            writer.write(overlay_frame(frame, predicted, truth, texts))
    return texts


# ------------------------------------------------------------------------------------- training curve
def plot_training_curve(log: Path, png: Path) -> dict[str, Any]:
    """Plot the loss of a training log (the trainer's ``metrics.csv``) against the step.

    Returns:
        ``{"steps", "final_loss", "minutes"}`` of the log.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    try:
        with open(log, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("step", "").isdigit()]
        steps = [int(row["step"]) for row in rows]
        loss = [float(row["loss"]) for row in rows]
    except (KeyError, ValueError) as err:
        raise InputError(f"{log}: not a training log with 'step' and 'loss' columns ({err})") from None
    if not rows:
        raise InputError(f"{log}: training log has no rows")
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    axes.plot(steps, loss, linewidth=1.2)
    stage1 = [s for s, row in zip(steps, rows) if row.get("stage") == "1"]
    if stage1 and any(row.get("stage") == "2" for row in rows):  # stage 2 starts after the last stage-1 step
        axes.axvline(stage1[-1], color="grey", linestyle="--", linewidth=1)
        axes.text(stage1[-1], max(loss), " stage 2", color="grey", va="top")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")  # train.loss_weight × (Lovász + bce_weight × BCE + aux_weight × Y loss)
    axes.set_title(f"training curve ({log.name})")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
    elapsed = rows[-1].get("elapsed")
    return {"steps": steps[-1], "final_loss": loss[-1], "minutes": round(float(elapsed) / 60, 1) if elapsed else None}


# --------------------------------------------------------------------------------------------- report
def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _row(name: str, result: dict[str, Any]) -> str:
    return (f"| {name} | {_f(result['J&F'])} | {_f(result['J']['mean'])} | {_f(result['F']['mean'])} | "
            f"{_f(result['J']['recall'])} | {_f(result['F']['recall'])} | {result['objects']} |")


def _motion_blind_lines(blind: dict[str, Any] | None, window: int = 0) -> list[str]:
    """The report's paragraph on motion (:func:`yofo.engine.evaluate.motion_blind_reference`).

    ``window``: the checkpoint's ``model.fm.motion.window`` (0: the paper's YOFO, which does not see motion).
    """
    if not blind:
        return []
    reference = (
        "picking at random among the objects the rest of the sentence fits (all the "
        f"video's objects for a motion-only sentence, at least two otherwise) expects at most {_f(blind['chance'])} "
        f"on these, and {_f(blind['bound'])} overall with every other expression perfect."
    )
    head = (f"{blind['expressions']} expressions need motion to single out their object; the model scores J&F "
            f"{_f(blind['J&F'])} on them. ")
    if window >= 2:
        body = (f"This model has motion-aware feature mining (ours, `model.fm.motion.window={window}`): feature "
                f"mining compares the last {window} frames. For reference, a model that cannot see motion, with "
                "perfect masks " + reference)
    else:
        needed = float("inf")  # J&F the other expressions need for the target, with motion at chance
        if blind["others"]:
            total = blind["expressions"] + blind["others"]
            needed = (TARGET_JF * total - blind["chance"] * blind["expressions"]) / blind["others"]
        body = ("This model has no motion-aware feature mining, and nothing in the paper's YOFO compares frames, so "
                "motion words cannot tell it which object is meant: a model with perfect masks " + reference
                + f" With motion at that level, J&F {TARGET_JF} overall needs "
                + (f"{_f(needed)} on the other {blind['others']} expressions." if needed <= 1 else
                   f"more than 1 on the other {blind['others']} expressions: out of reach without seeing motion."))
    return ["## Motion", "", head + body, ""]


def _named_lines(named: dict[str, Any] | None, header: list[str]) -> list[str]:
    """The report's results of single-cue expressions by what they name (:func:`yofo.engine.evaluate.per_named`)."""
    if not named:
        return []
    return ["Expressions that use one cue, by what they name (\"appearance: color\": the colour and nothing else, "
            "e.g. “the red shape”):", "", *header, *(_row(name, value) for name, value in named.items()), ""]


def _frame_lines(frames: dict[str, Any] | None) -> list[str]:
    """The report's J at a video's first frames (:func:`yofo.engine.evaluate.per_frame`)."""
    if not frames:
        return []
    columns = frames["frames"]
    rows = [f"| {'all' if name == 'all' else f'using {name}'} | " + " | ".join(_f(v) for v in values) + " |"
            for name, values in frames.items() if name != "frames"]
    return ["J by frame of the video (frame 0 has no earlier frame, so no motion can be seen there):", "",
            "| expressions | " + " | ".join(f"frame {c}" for c in columns) + " |",
            "|---|" + "---|" * len(columns), *rows, ""]


def _grounding_lines(grounding: dict[str, Any] | None) -> list[str]:
    """The report's grounding check (:func:`yofo.engine.evaluate.grounding_check`)."""
    if not grounding:
        return []
    rows = [f"| {kind} | {g['grounded']} / {g['sentences']} | {100 * g['share']:.0f} % |"
            for kind, g in grounding["per_kind"].items()]
    return [
        "## Grounding check",
        "",
        "On videos with two or more objects: does each sentence's mask land on its own object (mean J ≥ "
        f"{grounding['min_j']}) and not on another (mean J on every other object of the video at least "
        f"{grounding['margin']} lower)? This is what a user sees segmenting object A's sentence, then B's.",
        "",
        f"**{grounding['grounded']} of {grounding['sentences']} sentences ({100 * grounding['share']:.0f} %) are "
        f"grounded**; {grounding['on_other']} land on another object instead (J ≥ {grounding['min_j']} there, and "
        "higher than on their own).",
        "",
        "| expressions | grounded | share |",
        "|---|---|---|",
        f"| all | {grounding['grounded']} / {grounding['sentences']} | {100 * grounding['share']:.0f} % |",
        *rows,
        "",
    ]


def write_report(path: Path, summary: dict[str, Any]) -> None:
    """``report.md``: results overall, per cue, per kind, by what single-cue sentences name, per frame and for the
    control; the grounding check; overlays; curve; timing."""
    ev, data, control = summary["evaluation"], summary["data"], summary["evaluation"]["control"]
    header = ["| expressions | J&F | J | F | J-Recall | F-Recall | n |", "|---|---|---|---|---|---|---|"]
    met = "met" if ev["J&F"] is not None and ev["J&F"] >= TARGET_JF else "NOT met"
    lines = [
        "# yofo demo",
        "",
        f"Checkpoint `{summary['checkpoint']}` (sha256 `{summary['checkpoint_sha256']}`)"
        + (", trained by this demo (see below)." if "training" in summary else "."),
        f"Data: the synthetic benchmark's valid split, {data['valid']} videos of {data['frames']} frames at "
        f"{data['size'][0]}×{data['size'][1]}, generator seed {data['seed']} (settings from {data['source']}); "
        f"{ev['objects']} referring expressions, each scored as one object (J, F and J&F as the DAVIS toolkit).",
        "",
        "## Results",
        "",
        *header,
        _row("all", ev),
        *(_row(f"using {cue}", value) for cue, value in ev["per_cue"].items()),
        "",
        f"Target J&F ≥ {TARGET_JF} overall: **{met}** (J&F {_f(ev['J&F'])}).",
        "",
        "Per expression kind (the cues an expression needs to single out its object):",
        "",
        *header,
        *(_row(kind, value) for kind, value in ev["per_kind"].items()),
        "",
        *_named_lines(ev.get("per_named"), header),
        *_frame_lines(ev.get("per_frame")),
        *_grounding_lines(ev.get("grounding")),
        *_motion_blind_lines(ev.get("motion_blind"), summary.get("motion_window", 0)),
        "## Language-blind control",
        "",
        "The same predictions scored against another object of the same video: each video's expressions are "
        f"shuffled among its objects (a derangement, seed {control['seed']}), so every sentence is scored "
        "against an object it does not describe. A model that ignored the sentence would score the same here.",
        "",
        *header,
        _row("correct sentence", ev),
        _row("shuffled sentence", control),
        "",
        f"J&F {_f(ev['J&F'])} with the sentence that describes the object, {_f(control['J&F'])} with another "
        f"object's sentence" + (f" ({control['videos_not_shuffled']} video(s) with a single object kept their "
                                f"sentences)." if control["videos_not_shuffled"] else "."),
        "",
        "## Overlays",
        "",
        "Left: the frame untouched; middle: yofo's masks (one colour per sentence); right: the ground truth in the "
        "same colours; below: the sentences with their colours.",
        "",
        *(f"- [`{o['file']}`]({o['file']}): " + "; ".join(f"{k}. “{t}”" for k, t in enumerate(o["sentences"], 1))
          for o in summary["overlays"]),
        "",
        "## Training curve",
        "",
    ]
    curve = summary["training_curve"]
    if curve.get("file"):
        lines += [f"![training curve]({curve['file']})", "",
                  f"From `{curve['log']}`: {curve['steps']} steps, final loss {curve['final_loss']:.3f}"
                  + (f", {curve['minutes']} minutes of training." if curve.get("minutes") is not None else ".")]
    else:
        lines.append(f"No training log found at `{curve['log']}`, so no curve is shown.")
    if "training" in summary:
        t = summary["training"]
        command = " ".join(["yofo train", t["config"], "data.root=data/synth", *t["overrides"]])
        lines += ["", f"Trained here, as `yofo synth data/synth` then `{command}`: {t['steps']} steps in "
                  f"{t['seconds'] / 60:.1f} min" + (f" (budget {t['minutes']} min, {t['seconds_per_step']} s/step "
                                                      f"measured first)." if "minutes" in t else ".")]
    speed = ev["speed"]
    lines += [
        "",
        "## Timing",
        "",
        f"- evaluation: {speed['videos']} videos, {speed['frames']} frames in {speed['seconds']:.1f} s "
        f"({speed['frames_per_s']:.1f} frames/s, {summary['threads']} thread(s));",
        f"- whole demo: {summary['seconds']:.0f} s.",
        "",
        "Files: `metrics.json` (this summary), `eval/` (`yofo eval` output: per-object CSV, predicted masks).",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- demo
def run_demo(
    out: str | Path = "demo_out",
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    training_log: str | Path | None = None,
    train: bool = False,
    minutes: float | None = None,
    videos: int = 3,
    valid: int | None = None,
    threads: int = DEFAULT_THREADS,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo (module docstring) and return the content of ``OUT/metrics.json``.

    Args:
        out: output folder (replaced when complete).
        checkpoint: the model to demonstrate; ignored with ``train``.
        training_log: its training log (the trainer's ``metrics.csv``); default ``<checkpoint>.csv``.
        train: train a new model with ``configs/demo.yaml`` instead.
        minutes: with ``train``, the training time budget; None trains the config's full schedule.
        videos: number of valid videos rendered as overlay MP4s.
        valid: number of valid videos synthesized and evaluated; default the benchmark's valid count.
        threads: torch intra-op threads, 0 for torch's default (:mod:`yofo.threads`, whose default this is).
        progress: progress bars.

    Raises:
        CheckpointError: no checkpoint (without ``train``) or not a yofo checkpoint.
        InputError: bad counts.
    """
    start = time.perf_counter()
    checkpoint = Path(checkpoint)
    if not train and not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint not found (run from the repository root, pass "
                              f"--checkpoint, or train one with `yofo demo --train`)")
    settings = synth_settings(None if train else checkpoint)
    valid = settings["valid"] if valid is None else valid
    if valid < 1 or videos < 0:
        raise InputError(f"valid videos ({valid}) must be >= 1, overlay videos ({videos}) >= 0")
    if minutes is not None and minutes <= 0:
        raise InputError(f"minutes: {minutes} must be positive")
    previous_threads = torch.get_num_threads()
    threads = set_threads(threads)
    try:
        with atomic_output_dir(out) as folder, tempfile.TemporaryDirectory(prefix="yofo-demo-") as scratch:
            data = Path(scratch) / "synth"
            summary: dict[str, Any] = {}
            if train:
                _synthesize(data, settings, settings["train"], valid, progress)
                summary["training"] = _run_training(data, folder / "train", minutes, progress)
                checkpoint, log = folder / "train" / "model.safetensors", folder / "train" / "metrics.csv"
                shown_checkpoint, shown_log = "train/model.safetensors", "train/metrics.csv"
            else:
                _synthesize(data, settings, 0, valid, progress)
                log = Path(training_log) if training_log is not None else checkpoint.with_suffix(".csv")
                shown_checkpoint, shown_log = str(checkpoint), str(log)

            result = evaluate(data, "synthetic", folder / "eval", checkpoint=checkpoint, control_seed=0,
                              device="cpu", progress=progress)
            segmenter = VideoSegmenter(load_model(checkpoint), device="cpu")
            overlays = []
            chosen = load_ytvos(data, "valid")[:videos]
            for video in tqdm(chosen, desc="overlays", unit="video", disable=None if progress else True):
                file = f"overlays/{video.name}.mp4"
                overlays.append({"file": file, "sentences": write_overlay(segmenter, video, folder / file)})

            curve: dict[str, Any] = {"log": shown_log}
            if log.is_file():
                curve |= plot_training_curve(log, folder / "training_curve.png") | {"file": "training_curve.png"}

            summary |= {
                "checkpoint": shown_checkpoint,
                "checkpoint_sha256": result["checkpoint_sha256"],
                "data": {**{k: settings[k] for k in ("seed", "size", "frames", "source")}, "valid": valid},
                "evaluation": {k: v for k, v in result.items() if k not in ("per_object", "checkpoint", "data")},
                "target_jf": TARGET_JF,
                "motion_window": int(segmenter.model.cfg.fm.motion.window),
                "overlays": overlays,
                "training_curve": curve,
                "threads": threads,
            }
            summary["seconds"] = round(time.perf_counter() - start, 1)
            (folder / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
            write_report(folder / "report.md", summary)
    finally:
        torch.set_num_threads(previous_threads)
    return summary
