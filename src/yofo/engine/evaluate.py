"""Evaluation: segment a dataset with a checkpoint (or read saved predictions) and score it as DAVIS does.

    from yofo.engine.evaluate import evaluate
    result = evaluate("data/synth", "synthetic", "eval/synth", checkpoint="checkpoints/yofo-synthetic.safetensors")
    result["J&F"], result["per_cue"]["motion"]["J&F"]

Formats (brief §5, §6):

* ``ytvos`` and ``synthetic`` (Ref-YouTube-VOS layout): every expression is one scored object, named
  ``<video>_<exp_id>``, against the ground truth ``mask == obj_id`` on every frame that has a mask. All
  expressions of a video share one pass of the model. ``synthetic`` adds results per expression kind and per
  cue (appearance / motion / position), per single-cue expression by what it names (:func:`per_named`:
  colour alone, "moves up" alone, ...), J at a video's first frames (:func:`per_frame`) and what a model
  that cannot see motion could reach (:func:`motion_blind_reference`). A split without masks
  (Ref-YouTube-VOS valid) is not scored: it gives ``submission.zip`` in the official layout instead (brief
  §6.2).
* ``davis`` (Ref-DAVIS17, brief §6.1): per annotator, the objects' masks are merged into one id map per frame
  (argmax where the best probability is ≥ 0.5, brief §7.15) and scored as the DAVIS-2017 toolkit does
  (brief §5.3): ``semi`` (GT ``Annotations/480p``, first and last frames not scored, as RefVOS) or
  ``unsupervised`` (GT ``Annotations_unsupervised/480p``, all frames, Hungarian matching of predicted to GT
  objects on (J+F)/2, as ReferFormer). Annotator ``both`` scores annotators 1 and 2 separately and averages.

Void pixels (255) are background when GT is read, as in the toolkit, so official numbers are reproduced
(:mod:`yofo.metrics`). Global results are object-weighted means (:func:`yofo.metrics.aggregate`).

Output folder, written in a temporary folder beside it and moved into place when complete::

    OUT/metrics.json       settings, J, F (mean, recall, decay), J&F; per annotator / kind / cue / named
                           attribute; J per frame; control;
                           speed; per-object list (without masks: settings, speed and the submission's size)
    OUT/per_object.csv     one row per scored object
    OUT/predictions/<video>/<exp_id>/<frame>.png    ytvos, synthetic: palette PNG, 1 = the referred object
    OUT/predictions/annot<a>/<video>/<frame>.png     davis: palette PNG of object ids, per annotator
    OUT/submission.zip     split without masks: Annotations/<video>/<exp_id>/<frame>.png, 0/255, original size

``predictions=DIR`` scores a folder laid out as ``OUT/predictions`` (any non-zero pixel is the object for
ytvos / synthetic, so an unzipped submission's ``Annotations`` folder works too) instead of running a model.

Under ``torchrun`` rank r evaluates videos r, r+W, ...; every rank writes its PNGs into rank 0's temporary
folder (one machine, or a shared file system) and rank 0 gathers the scores and writes the results.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
import zipfile
import zlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch.distributed as torch_dist
from PIL import Image
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from yofo.data.davis import load_davis
from yofo.data.records import VOID, Expression, Video, read_frame, read_mask, refuse_problems
from yofo.data.synthetic import CUES, parse_description
from yofo.data.ytvos import load_ytvos
from yofo.engine.checkpoint import load_model
from yofo.engine.distributed import Distributed, init_distributed
from yofo.errors import DatasetError, InputError
from yofo.files import file_sha256
from yofo.metrics import aggregate, db_eval_boundary, db_eval_iou, db_statistics
from yofo.predictor import VideoSegmenter, label_map
from yofo.video_io import atomic_output_dir, write_palette_png

FORMATS = ("ytvos", "synthetic", "davis")
ANNOTATORS = {"1": (1,), "2": (2,), "both": (1, 2)}
PROTOCOLS = ("semi", "unsupervised")  # also the names of the GT folders in load_davis(gt=...)
EXPRESSION_TYPES = ("first_frame", "full_video")
DEFAULT_SPLITS = {"ytvos": "valid", "synthetic": "valid", "davis": "val"}
FRAME_BUCKETS = 4  # synthetic: J at frames 0, 1, 2 and ≥ 3 of each video (per_frame)
MAX_PROPOSALS = 20  # the toolkit's limit on predicted objects in the unsupervised task (brief §5.3)
METRICS_FILE = "metrics.json"
CSV_FILE = "per_object.csv"
SUBMISSION_FILE = "submission.zip"
CSV_COLUMNS = ("name", "video", "obj_id", "exp_id", "annotator", "kind", "frames", "J&F-Mean", "J-Mean",
               "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay", "text")


@dataclass
class ObjectScore:
    """Per-frame J and F of one scored object.

    Attributes:
        name: ``<video>_<exp_id>`` (ytvos, synthetic) or ``<video>_<obj_id>`` (davis), as the toolkit's CSV.
        video: video name.
        obj_id: the ground-truth object id it is scored against.
        J, F: ``(n,)`` float64 values of the n scored frames.
        exp_id, kind, text: the expression (davis: the annotator's expression for the object, if any).
        annotator: davis only, 1 or 2.
        J_others: ytvos, synthetic: per-frame J of the same prediction against each other object of the video
            that has expressions, ``{obj_id: (n,)}`` (the grounding check, :func:`grounding_check`).
    """

    name: str
    video: str
    obj_id: int
    J: np.ndarray
    F: np.ndarray
    exp_id: str | None = None
    kind: str | None = None
    text: str | None = None
    annotator: int | None = None
    J_others: dict[int, np.ndarray] | None = None


# -------------------------------------------------------------------------------------------- results
def _number(value: float) -> float | None:
    """JSON has no NaN: an object with no scored frame gives null."""
    return None if math.isnan(value) else float(value)


def summarize(scores: Sequence[ObjectScore]) -> dict[str, Any]:
    """Global results of scored objects: ``{"J&F", "J": {mean, recall, decay}, "F": {...}, "objects"}``.

    Object-weighted means over all objects of all videos (brief §5.3, :func:`yofo.metrics.aggregate`).
    """
    measures = aggregate({str(i): {"J": s.J, "F": s.F} for i, s in enumerate(scores)})
    result: dict[str, Any] = {"J&F": _number(measures["J&F-Mean"])}
    for measure in ("J", "F"):
        result[measure] = {stat.lower(): _number(measures[f"{measure}-{stat}"]) for stat in ("Mean", "Recall", "Decay")}
    result["objects"] = len(scores)
    return result


def _mean_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average of several :func:`summarize` results (Ref-DAVIS17 annotators 1 and 2, brief §6.1)."""

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    result: dict[str, Any] = {"J&F": mean([s["J&F"] for s in summaries])}
    for measure in ("J", "F"):
        result[measure] = {stat: mean([s[measure][stat] for s in summaries]) for stat in ("mean", "recall", "decay")}
    result["objects"] = sum(s["objects"] for s in summaries)
    return result


def _by_cue(scores: Sequence[ObjectScore]) -> dict[str, list[ObjectScore]]:
    """The scored expressions of each cue, in cue order: every expression whose kind uses the cue."""
    cues = sorted({cue for s in scores if s.kind for cue in s.kind.split("+")})
    return {cue: [s for s in scores if s.kind and cue in s.kind.split("+")] for cue in cues}


def _groups(scores: Sequence[ObjectScore]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Results per expression kind (e.g. ``appearance+motion``) and per cue (every kind that uses the cue)."""
    kinds = sorted({s.kind for s in scores if s.kind})
    per_kind = {kind: summarize([s for s in scores if s.kind == kind]) for kind in kinds}
    return per_kind, {cue: summarize(group) for cue, group in _by_cue(scores).items()}


def per_named(scores: Sequence[ObjectScore]) -> dict[str, Any]:
    """Results of the expressions that use a single cue, by what they name (synthetic benchmark).

    Appearance alone by the attributes named (``appearance: color``, ``appearance: color + size``, ...), motion
    alone by the motion (``motion: left``, ``motion: bouncing``), position alone by the position
    (``position: top``); read from the sentence with the generator's vocabulary
    (:func:`yofo.data.synthetic.parse_description`). Returns ``{group: summary}`` (as :func:`summarize`).
    """
    groups: dict[str, list[ObjectScore]] = {}
    for s in scores:
        if s.kind not in CUES or s.text is None:
            continue
        desc = parse_description(s.text)
        named = {"appearance": desc.attributes, "motion": desc.motion, "position": desc.position}[s.kind]
        groups.setdefault(f"{s.kind}: {named or 'other'}", []).append(s)
    return {name: summarize(group) for name, group in sorted(groups.items())}


def per_frame(scores: Sequence[ObjectScore], frames: int = FRAME_BUCKETS) -> dict[str, Any]:
    """Mean J at a video's first frames, overall and per cue: how an online model warms up (synthetic).

    Every frame of a synthetic video is scored, so entry t of an expression's ``J`` is frame t. Entry t
    (t < ``frames`` − 1) of a row is the mean over expressions of J at frame t; the last entry, of each
    expression's mean J over frames ≥ ``frames`` − 1. Returns ``{"frames": ["0", "1", "2", "≥3"], "all":
    [...], "<cue>": [...]}`` (``frames`` entries per row; None where no expression has that frame).
    """

    def row(group: list[ObjectScore]) -> list[float | None]:
        columns = [[s.J[t] for s in group if len(s.J) > t] for t in range(frames - 1)]
        columns.append([np.nanmean(s.J[frames - 1 :]) for s in group if len(s.J) >= frames])
        return [_number(np.nanmean(c)) if c else None for c in columns]

    return {"frames": [*map(str, range(frames - 1)), f"≥{frames - 1}"], "all": row(list(scores)),
            **{cue: row(group) for cue, group in _by_cue(scores).items()}}


def motion_blind_reference(scores: Sequence[ObjectScore]) -> dict[str, Any] | None:
    """What the expressions that need motion leave to a model that cannot see motion (synthetic benchmark).

    Nothing in YOFO compares frames, so the motion words of a sentence cannot single out its object. A model
    that segments perfectly but cannot see motion can only guess among the objects the rest of the sentence
    fits: for a motion-only sentence, all k objects of the video (expected J&F 1/k); for one that also names
    appearance or position, at least two, because the benchmark's expressions are minimal (without its motion
    a sentence does not pick out its object alone), so at most 1/2. The objects of a video are those its
    expressions are scored against (``yofo synth`` describes every object).

    Args:
        scores: scored expressions with their ``kind`` (``appearance+motion``, ...).

    Returns:
        ``None`` without an expression that needs motion, else ``{"expressions": n, "J&F": scored J&F on them,
        "chance": mean expected J&F of the guess on them, "bound": J&F overall of a model perfect on every other
        expression and guessing on these, "others": number of other expressions}``.
    """
    objects: dict[str, set[int]] = {}
    for s in scores:
        objects.setdefault(s.video, set()).add(s.obj_id)
    motion = [s for s in scores if s.kind and "motion" in s.kind.split("+")]
    if not motion:
        return None
    guess = [1 / len(objects[s.video]) if s.kind == "motion" else 0.5 for s in motion]
    others = len(scores) - len(motion)
    return {"expressions": len(motion), "J&F": summarize(motion)["J&F"], "chance": float(np.mean(guess)),
            "bound": (sum(guess) + others) / len(scores), "others": others}


GROUNDED_J = 0.5  # the grounding check: J on the sentence's own object at least this ...
GROUNDED_MARGIN = 0.3  # ... and J on every other object of the video at least this much lower


def grounding_check(scores: Sequence[ObjectScore]) -> dict[str, Any] | None:
    """Share of sentences that land on their own object and on no other (videos with two or more objects).

    A sentence is grounded when its prediction's mean J on its own object is at least :data:`GROUNDED_J`
    and its mean J on every other object of the video is at least :data:`GROUNDED_MARGIN` lower. This asks
    what a user segmenting object A's sentence and then object B's sees: whether each mask follows its
    sentence, which the overall J&F mixes with how well objects are segmented at all.

    Args:
        scores: scored expressions with ``J_others`` (from :func:`evaluate_expressions`).

    Returns:
        ``None`` when no video has two objects, else ``{"sentences": n, "grounded": m, "share": m / n,
        "on_other": sentences whose mask lands on another object instead (J ≥ 0.5 there, and higher than on
        their own), "per_kind":
        {kind: {"sentences", "grounded", "share"}}, "min_j", "margin"}``.
    """
    rows = []
    for s in scores:
        if not s.J_others:
            continue
        own = float(np.mean(s.J)) if len(s.J) else 0.0
        other = max(float(np.mean(j)) if len(j) else 0.0 for j in s.J_others.values())
        rows.append((s.kind, own >= GROUNDED_J and other <= own - GROUNDED_MARGIN, other >= GROUNDED_J and other > own))
    if not rows:
        return None

    def share(group: list[tuple]) -> dict[str, Any]:
        grounded = sum(g for _, g, _ in group)
        return {"sentences": len(group), "grounded": grounded, "share": grounded / len(group)}

    kinds = sorted({kind for kind, _, _ in rows if kind})
    return {**share(rows), "on_other": sum(o for _, _, o in rows),
            "per_kind": {kind: share([r for r in rows if r[0] == kind]) for kind in kinds},
            "min_j": GROUNDED_J, "margin": GROUNDED_MARGIN}


def _object_row(score: ObjectScore) -> dict[str, Any]:
    """One object's statistics (brief §5.3) with its identity, for metrics.json and the CSV."""
    (jm, jr, jd), (fm, fr, fd) = db_statistics(score.J), db_statistics(score.F)
    return {
        "name": score.name, "video": score.video, "obj_id": score.obj_id, "exp_id": score.exp_id,
        "annotator": score.annotator, "kind": score.kind, "frames": len(score.J),
        "J&F-Mean": _number((jm + fm) / 2), "J-Mean": _number(jm), "J-Recall": _number(jr), "J-Decay": _number(jd),
        "F-Mean": _number(fm), "F-Recall": _number(fr), "F-Decay": _number(fd), "text": score.text,
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


# -------------------------------------------------------------------------------------- language-blind control
def shuffle_objects(video: Video, seed: int) -> dict[int, int]:
    """The language-blind control's object permutation of one video: a derangement where possible.

    The objects that have expressions are put in a random order (from ``seed`` and the video name, so
    sharding does not change it) and each is mapped to the next one, cyclically, so no object keeps its own
    expressions when the video has two or more. Scoring an expression against the object it is mapped to
    asks how well the model does when the sentence describes another object of the same video.

    Returns:
        ``{obj_id: obj_id of the object its expressions are scored against}``.
    """
    objects = sorted({e.obj_id for e in video.expressions if e.obj_id is not None})
    rng = np.random.default_rng([seed, zlib.crc32(video.name.encode())])
    order = [objects[i] for i in rng.permutation(len(objects))]
    return {obj: order[(i + 1) % len(order)] for i, obj in enumerate(order)}


# ---------------------------------------------------------------------------------------- per video
def _unique_texts(expressions: Sequence[Expression]) -> tuple[list[str], dict[str, int]]:
    """Distinct sentences (the model takes each once) and each sentence's row in the logits."""
    texts = list(dict.fromkeys(e.text for e in expressions))
    return texts, {text: k for k, text in enumerate(texts)}


def _frame_logits(segmenter: VideoSegmenter, video: Video, texts: list[str]) -> Iterator[np.ndarray]:
    """Logits ``(K, H, W)`` of the K sentences for each frame of ``video``, at the frame's size."""
    segmenter.start(texts)
    for path in video.frame_paths:
        yield segmenter.step_logits(read_frame(path))


def _read_prediction(path: Path, shape: tuple[int, int], gt_path: Path) -> np.ndarray:
    """A saved prediction PNG as uint8 ids ``(H, W)``; InputError when it is missing or of another size."""
    if not path.is_file():
        raise InputError(f"{path}: prediction missing (every frame with ground truth needs one)")
    ids = read_mask(path)
    if ids.shape != shape:
        raise InputError(f"{path}: prediction is {ids.shape[1]}x{ids.shape[0]}, ground truth {gt_path} is "
                         f"{shape[1]}x{shape[0]}")
    return ids


def _read_gt(path: Path | None, video: Video, t: int) -> np.ndarray:
    """Ground-truth ids ``(H, W)`` of frame t with void (255) as background, as the toolkit reads GT."""
    if path is None:
        raise DatasetError(f"video '{video.name}': frame '{video.frame_names[t]}' has no ground-truth mask")
    ids = read_mask(path)
    return np.where(ids == VOID, 0, ids).astype(np.uint8)


def _check_size(gt: np.ndarray, gt_path: Path, shape: tuple[int, ...], frame_path: Path) -> None:
    if gt.shape != tuple(shape):
        raise DatasetError(f"{gt_path}: mask is {gt.shape[1]}x{gt.shape[0]}, "
                           f"frame {frame_path} is {shape[1]}x{shape[0]}")


def evaluate_expressions(
    video: Video,
    segmenter: VideoSegmenter | None,
    write_to: Path | None,
    read_from: Path | None = None,
    control_seed: int | None = None,
) -> tuple[list[ObjectScore], list[ObjectScore]]:
    """Score every expression of a video in the Ref-YouTube-VOS layout against ``mask == obj_id``.

    Args:
        video: a video whose expressions have ``obj_id`` and whose frames have masks (frames without one are
            not scored).
        segmenter: runs the model over all frames, K distinct sentences at once; None with ``read_from``.
        write_to: ``predictions`` folder for ``<video>/<exp_id>/<frame>.png`` (palette PNGs, 1 = object).
        read_from: instead of a model, a folder of saved predictions in that layout.
        control_seed: also score the language-blind control (:func:`shuffle_objects`) with this seed.

    Returns:
        (scores, control scores), one per expression in the video's order; no control scores without a seed.
    """
    expressions = [e for e in video.expressions if e.obj_id is not None]
    mapping = shuffle_objects(video, control_seed) if control_seed is not None else {}
    values = {e.exp_id: ([], [], [], []) for e in expressions}  # J, F, control J, control F per frame
    objects = sorted({e.obj_id for e in expressions})
    others = {e.exp_id: {o: [] for o in objects if o != e.obj_id} for e in expressions}  # J on the others
    texts, row = _unique_texts(expressions)
    logits_per_frame = _frame_logits(segmenter, video, texts) if segmenter is not None else None
    for t, gt_path in enumerate(video.mask_paths):
        masks = None
        if logits_per_frame is not None:  # the model sees every frame, in order, scored or not
            logits = next(logits_per_frame)
            masks = {e.exp_id: logits[row[e.text]] > segmenter.threshold for e in expressions}
            if write_to is not None:
                for exp_id, mask in masks.items():
                    write_palette_png(write_to / video.name / exp_id / f"{video.frame_names[t]}.png", mask)
        if gt_path is None:
            continue
        gt = _read_gt(gt_path, video, t)
        if masks is not None:
            _check_size(gt, gt_path, logits.shape[1:], video.frame_paths[t])
        for e in expressions:
            if masks is not None:
                mask = masks[e.exp_id]
            else:
                path = read_from / video.name / e.exp_id / f"{video.frame_names[t]}.png"
                mask = _read_prediction(path, gt.shape, gt_path) > 0
            j, f, cj, cf = values[e.exp_id]
            j.append(db_eval_iou(gt == e.obj_id, mask))
            for obj_id, other_j in others[e.exp_id].items():
                other_j.append(db_eval_iou(gt == obj_id, mask))
            f.append(db_eval_boundary(gt == e.obj_id, mask))
            if mapping:
                cj.append(db_eval_iou(gt == mapping[e.obj_id], mask))
                cf.append(db_eval_boundary(gt == mapping[e.obj_id], mask))
    scores, control = [], []
    for e in expressions:
        j, f, cj, cf = (np.asarray(v, dtype=np.float64) for v in values[e.exp_id])
        j_others = {o: np.asarray(v, dtype=np.float64) for o, v in others[e.exp_id].items()}
        score = ObjectScore(f"{video.name}_{e.exp_id}", video.name, e.obj_id, j, f, e.exp_id, e.kind, e.text,
                            J_others=j_others)
        scores.append(score)
        if mapping:
            control.append(replace(score, obj_id=mapping[e.obj_id], J=cj, F=cf))
    return scores, control


def _annotator(expression: Expression) -> int:
    """Ref-DAVIS17 exp_ids are 4·(obj−1) + 2·(annotator−1) + type (:func:`yofo.data.davis.load_davis`)."""
    return int(expression.exp_id) % 4 // 2 + 1


def davis_object_scores(
    gt: np.ndarray, pred: np.ndarray, protocol: str, pred_name: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-frame J and F of each ground-truth object of one video, as the DAVIS-2017 toolkit (brief §5.3).

    Args:
        gt: uint8 ``(T, H, W)`` ground-truth ids, void already background; objects are 1..max id of frame 0.
        pred: uint8 ``(T, H, W)`` predicted ids; objects are 1..max id over the video.
        protocol: ``semi``: predicted object k is GT object k, frames 1..T−2 are scored, a predicted id above
            the GT object count is an error; ``unsupervised``: all frames, up to 20 predicted objects matched
            one-to-one to GT objects by the Hungarian algorithm on mean (J+F)/2 (unmatched GT objects score
            against an empty mask).
        pred_name: names the predictions in error messages.

    Returns:
        ``[(J (n,), F (n,))]`` for GT objects 1..N.
    """
    n_gt, n_pred = int(gt[0].max()), int(pred.max())
    if protocol == "semi":
        if n_pred > n_gt:
            raise InputError(f"{pred_name}: predicted object id {n_pred} but the ground truth has {n_gt} object(s)")
        gt, pred = gt[1:-1], pred[1:-1]
        return [(np.asarray(db_eval_iou(gt == k, pred == k)).reshape(-1),
                 np.asarray(db_eval_boundary(gt == k, pred == k)).reshape(-1)) for k in range(1, n_gt + 1)]
    if n_pred > MAX_PROPOSALS:
        raise InputError(f"{pred_name}: {n_pred} predicted objects, at most {MAX_PROPOSALS} are allowed (unsupervised)")
    n_cols = max(n_pred, n_gt)
    j = np.zeros((n_gt, n_cols, len(gt)))
    f = np.zeros((n_gt, n_cols, len(gt)))
    for g in range(n_gt):
        for p in range(n_cols):
            j[g, p] = db_eval_iou(gt == g + 1, pred == p + 1)
            f[g, p] = db_eval_boundary(gt == g + 1, pred == p + 1)
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return [(j[g, p], f[g, p]) for g, p in zip(rows, cols)]


def evaluate_davis_video(
    video: Video,
    annotators: Sequence[int],
    protocol: str,
    segmenter: VideoSegmenter | None,
    write_to: Path | None,
    read_from: Path | None = None,
) -> list[ObjectScore]:
    """Segment a Ref-DAVIS17 video once for all its expressions, merge per annotator, score (brief §6.1).

    Args:
        video: from :func:`yofo.data.davis.load_davis` with the chosen expression type and GT.
        annotators: 1 and/or 2; each annotator's expressions give one id map per frame.
        protocol: ``semi`` or ``unsupervised`` (:func:`davis_object_scores`).
        segmenter: runs the model; None with ``read_from``.
        write_to: ``predictions`` folder for ``annot<a>/<video>/<frame>.png``.
        read_from: instead of a model, a folder of saved predictions in that layout.

    Returns:
        one score per GT object per annotator.
    """
    by_annotator = {a: [e for e in video.expressions if _annotator(e) == a] for a in annotators}
    texts, row = _unique_texts(video.expressions)
    logits_per_frame = _frame_logits(segmenter, video, texts) if segmenter is not None else None
    gt_stack, pred_stacks = [], {a: [] for a in annotators}
    for t, gt_path in enumerate(video.mask_paths):
        gt = _read_gt(gt_path, video, t)
        gt_stack.append(gt)
        logits = next(logits_per_frame) if logits_per_frame is not None else None
        if logits is not None:
            _check_size(gt, gt_path, logits.shape[1:], video.frame_paths[t])
        for a, expressions in by_annotator.items():
            path_parts = (f"annot{a}", video.name, f"{video.frame_names[t]}.png")
            if logits is None:
                ids = _read_prediction(read_from.joinpath(*path_parts), gt.shape, gt_path)
            elif expressions:
                # label_map numbers the sentences 1..K; the lookup turns those into the objects' ids.
                lookup = np.array([0] + [e.obj_id for e in expressions], dtype=np.uint8)
                ids = lookup[label_map(logits[[row[e.text] for e in expressions]], segmenter.threshold)]
            else:
                ids = np.zeros(gt.shape, dtype=np.uint8)
            if write_to is not None:
                write_palette_png(write_to.joinpath(*path_parts), ids)
            pred_stacks[a].append(ids)
    scores = []
    for a in annotators:
        pred_name = str((read_from or write_to or Path()) / f"annot{a}" / video.name)
        per_object = davis_object_scores(np.stack(gt_stack), np.stack(pred_stacks[a]), protocol, pred_name)
        expression_of = {e.obj_id: e for e in by_annotator[a]}
        for obj_id, (j, f) in enumerate(per_object, start=1):
            e = expression_of.get(obj_id)
            scores.append(ObjectScore(f"{video.name}_{obj_id}", video.name, obj_id, j, f,
                                      e.exp_id if e else None, None, e.text if e else None, a))
    return scores


def write_submission_video(video: Video, segmenter: VideoSegmenter, folder: Path) -> None:
    """Write ``folder/<video>/<exp_id>/<frame>.png`` for every expression and frame: single-channel 0/255
    masks at the frame's size, as ReferFormer writes its Ref-YouTube-VOS submissions (brief §6.2)."""
    texts, row = _unique_texts(video.expressions)
    for t, logits in enumerate(_frame_logits(segmenter, video, texts)):
        for e in video.expressions:
            path = folder / video.name / e.exp_id / f"{video.frame_names[t]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(logits[row[e.text]] > segmenter.threshold, 255, 0).astype(np.uint8)).save(path)


def zip_submission(folder: Path, videos: Sequence[Video], zip_path: Path) -> int:
    """Check that ``folder`` holds a PNG for every video, expression and listed frame, then zip it as
    ``Annotations/<video>/<exp_id>/<frame>.png`` (the layout the Ref-YouTube-VOS server expects).

    Returns:
        the number of PNGs zipped.

    Raises:
        DatasetError: naming the first missing PNG; no zip is written then.
    """
    files = [(video, e, name) for video in videos for e in video.expressions for name in video.frame_names]
    for video, e, name in files:
        path = folder / video.name / e.exp_id / f"{name}.png"
        if not path.is_file():
            raise DatasetError(f"{path}: submission incomplete (video '{video.name}' expression '{e.exp_id}' "
                               f"frame '{name}' has no mask)")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for video, e, name in files:
            relative = f"{video.name}/{e.exp_id}/{name}.png"
            archive.write(folder / relative, f"Annotations/{relative}")
    return len(files)


# -------------------------------------------------------------------------------------------- driver
def load_videos(
    data: str | Path,
    fmt: str,
    split: str | None = None,
    annotator: str = "1",
    expression_type: str = "first_frame",
    protocol: str = "semi",
    test_meta: str | Path | None = None,
) -> list[Video]:
    """The videos of the split to evaluate (see :func:`evaluate` for the arguments)."""
    if fmt not in FORMATS:
        raise InputError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    split = split or DEFAULT_SPLITS[fmt]
    if fmt == "davis":
        if annotator not in ANNOTATORS:
            raise InputError(f"annotator: '{annotator}' is not one of {', '.join(ANNOTATORS)}")
        if expression_type not in EXPRESSION_TYPES:
            raise InputError(f"expression type: '{expression_type}' is not one of {', '.join(EXPRESSION_TYPES)}")
        if protocol not in PROTOCOLS:
            raise InputError(f"protocol: '{protocol}' is not one of {', '.join(PROTOCOLS)}")
        return load_davis(data, split, ANNOTATORS[annotator], expression_type, gt=protocol)
    videos = load_ytvos(data, split, test_meta=test_meta)
    if fmt == "synthetic":
        meta = Path(data) / "meta_expressions" / split / "meta_expressions.json"
        for video in videos:
            for e in video.expressions:
                if e.kind is None:
                    raise DatasetError(f"{meta}: video '{video.name}' expression '{e.exp_id}' has no 'kind' "
                                       f"(not a synthetic benchmark; use --format ytvos)")
    return videos


def _shared_folder(dist: Distributed, folder: Path | None) -> Path:
    """Rank 0's temporary output folder, on every rank."""
    if not dist.enabled:
        return folder
    box = [str(folder) if dist.is_main else None]
    torch_dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _gather(dist: Distributed, mine: list) -> list | None:
    """Rank 0: every rank's per-video results, back in dataset order (rank r held videos r, r+W, ...)."""
    if not dist.enabled:
        return mine
    parts = [None] * dist.world_size if dist.is_main else None
    torch_dist.gather_object(mine, parts, dst=0)
    if not dist.is_main:
        return None
    total = sum(len(part) for part in parts)
    return [parts[i % dist.world_size][i // dist.world_size] for i in range(total)]


def evaluate(
    data: str | Path,
    fmt: str,
    out: str | Path,
    checkpoint: str | Path | None = None,
    predictions: str | Path | None = None,
    split: str | None = None,
    annotator: str = "1",
    expression_type: str = "first_frame",
    protocol: str = "semi",
    test_meta: str | Path | None = None,
    control_seed: int | None = None,
    device: str = "auto",
    max_videos: int | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Evaluate a checkpoint (or saved predictions) on a dataset split and write the results to ``out``.

    Args:
        data: dataset root (Ref-YouTube-VOS layout for ytvos / synthetic, DAVIS folders for davis).
        fmt: ``ytvos``, ``synthetic`` or ``davis``.
        out: output folder (replaced when complete; see the module docstring for its content).
        checkpoint: a yofo ``.safetensors`` checkpoint; exactly one of ``checkpoint`` and ``predictions``.
        predictions: a folder of saved predictions laid out as ``OUT/predictions``.
        split: default ``valid`` (ytvos, synthetic) or ``val`` (davis).
        annotator: davis: ``1``, ``2`` or ``both`` (scored separately, results averaged).
        expression_type: davis: ``first_frame`` or ``full_video``.
        protocol: davis: ``semi`` or ``unsupervised`` (module docstring).
        test_meta: ytvos: a test ``meta_expressions.json`` whose videos are left out (brief §6.2).
        control_seed: ytvos / synthetic: also score the language-blind control (:func:`shuffle_objects`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, each rank's GPU).
        max_videos: evaluate only the first N videos.
        progress: progress bar on rank 0.

    Returns:
        on rank 0 the content of ``metrics.json``; None on other ranks.

    Raises:
        InputError: bad options, missing or mis-sized saved predictions.
        DatasetError: unreadable dataset, a video with a problem its reader found (a gap in the frame
            numbering, ...), missing or mis-sized ground truth.
        CheckpointError: the checkpoint is missing or not a yofo checkpoint.
    """
    if (checkpoint is None) == (predictions is None):
        raise InputError("give either a checkpoint or a predictions folder")
    if predictions is not None and not Path(predictions).is_dir():
        raise InputError(f"{predictions}: predictions folder not found")
    if max_videos is not None and max_videos < 1:
        raise InputError(f"max videos: {max_videos} must be >= 1")
    videos = load_videos(data, fmt, split, annotator, expression_type, protocol, test_meta)[:max_videos]
    videos = [v for v in videos if v.expressions]
    refuse_problems(videos)
    if not videos:
        raise DatasetError(f"{data}: no video with expressions in split '{split or DEFAULT_SPLITS[fmt]}'")
    labelled = any(path is not None for v in videos for path in v.mask_paths)
    if not labelled and (fmt != "ytvos" or predictions is not None):
        hint = " (a ytvos split without masks gives a submission zip)" if fmt == "ytvos" else ""
        raise DatasetError(f"{data}: split '{split or DEFAULT_SPLITS[fmt]}' has no ground-truth masks to score{hint}")
    if control_seed is not None and fmt == "davis":
        raise InputError("the shuffle control is for ytvos / synthetic data (davis merges objects per annotator)")

    model = load_model(checkpoint) if checkpoint is not None else None  # a bad checkpoint fails before any write
    dist = init_distributed(device)
    try:
        segmenter = VideoSegmenter(model, device=dist.device) if model is not None else None
        if segmenter is not None and dist.is_main:
            segmenter.check_footage(data)
        settings = {
            "format": fmt, "data": str(data), "split": split or DEFAULT_SPLITS[fmt],
            **({"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)} if checkpoint else
               {"predictions": str(predictions)}),
            **({"annotator": annotator, "expression_type": expression_type, "protocol": protocol}
               if fmt == "davis" else {}),
        }
        run = partial(_evaluate_into, videos=videos, fmt=fmt, labelled=labelled, segmenter=segmenter,
                      read_from=Path(predictions) if predictions else None, annotators=ANNOTATORS.get(annotator, ()),
                      protocol=protocol, control_seed=control_seed, settings=settings, dist=dist, progress=progress)
        if dist.is_main:
            with atomic_output_dir(out) as folder:
                return run(_shared_folder(dist, folder))
        run(_shared_folder(dist, None))
        return None
    finally:
        dist.close()


def _evaluate_into(
    folder: Path,
    videos: list[Video],
    fmt: str,
    labelled: bool,
    segmenter: VideoSegmenter | None,
    read_from: Path | None,
    annotators: Sequence[int],
    protocol: str,
    control_seed: int | None,
    settings: dict[str, Any],
    dist: Distributed,
    progress: bool,
) -> dict[str, Any] | None:
    """Evaluate this rank's share of ``videos`` into ``folder``; rank 0 gathers and writes the results."""
    write_to = folder / "predictions" if segmenter is not None else None
    scratch = folder / "Annotations"  # submission PNGs, zipped at the end
    mine = videos[dist.rank :: dist.world_size]
    results = []
    start = time.perf_counter()
    bar = tqdm(mine, desc="eval", unit="video", dynamic_ncols=True, disable=None if progress and dist.is_main else True)
    for video in bar:
        if fmt == "davis":
            results.append((evaluate_davis_video(video, annotators, protocol, segmenter, write_to, read_from), []))
        elif labelled:
            results.append(evaluate_expressions(video, segmenter, write_to, read_from, control_seed))
        else:
            write_submission_video(video, segmenter, scratch)
            results.append(([], []))
    bar.close()
    results = _gather(dist, results)
    if dist.enabled:
        torch_dist.barrier()  # every rank's PNGs are written
    if not dist.is_main:
        return None
    seconds = time.perf_counter() - start
    frames = sum(len(v.frame_names) for v in videos)
    result: dict[str, Any] = dict(settings)
    if not labelled:
        masks = zip_submission(scratch, videos, folder / SUBMISSION_FILE)
        result["submission"] = {"file": SUBMISSION_FILE, "masks": masks}
        shutil.rmtree(scratch)
    else:
        scores = [s for video_scores, _ in results for s in video_scores]
        if fmt == "davis":
            per_annotator = {str(a): summarize([s for s in scores if s.annotator == a]) for a in annotators}
            result |= _mean_summaries(list(per_annotator.values()))
            if len(annotators) > 1:
                result["per_annotator"] = per_annotator
        else:
            result |= summarize(scores)
        if fmt == "synthetic":
            result["per_kind"], result["per_cue"] = _groups(scores)
            result["per_named"], result["per_frame"] = per_named(scores), per_frame(scores)
            result["motion_blind"] = motion_blind_reference(scores)
        if fmt != "davis":
            result["grounding"] = grounding_check(scores)
        if control_seed is not None:
            control = [s for _, video_control in results for s in video_control]
            kept = sum(len(shuffle_objects(v, control_seed)) < 2 for v in videos)
            result["control"] = {"method": "shuffle", "seed": control_seed, **summarize(control),
                                 "videos_not_shuffled": kept}
            if fmt == "synthetic":
                result["control"]["per_cue"] = _groups(control)[1]
    result["speed"] = {"videos": len(videos), "frames": frames, "seconds": round(seconds, 3),
                       "videos_per_s": round(len(videos) / seconds, 4), "frames_per_s": round(frames / seconds, 4),
                       "processes": dist.world_size}
    if labelled:
        rows = [_object_row(s) for video_scores, _ in results for s in video_scores]
        result["per_object"] = rows
        _write_csv(folder / CSV_FILE, rows)
    (folder / METRICS_FILE).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
