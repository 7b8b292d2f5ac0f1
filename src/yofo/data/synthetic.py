"""A synthetic referring-video benchmark that needs language, written in the Ref-YouTube-VOS layout.

Each video shows 2–4 objects (shape × colour × size) on a textured, noisy background. Objects move (left,
right, up, down, bouncing back and forth) or stay still, overlap in depth order and sometimes leave the
frame in part. Every object gets referring expressions that identify it uniquely by appearance ("the
large red circle"), motion ("the shape moving left", "the object that does not move"), position ("the
triangle on the left") or a combination; each expression is minimal (no cue can be dropped). Distractors
that share the colour or the shape of another object are planted on purpose, so one word rarely suffices.

Position words compare the objects a description leaves as candidates: "the red shape on the left" is
the red object left of every other red object in every frame where both are visible, by a margin over the
video. Centroids are measured on the rendered masks, i.e. on what a model sees.

Output (both splits have masks and ``obj_id``; the readers load it like the real dataset)::

    OUT/synth.json                                   generator settings (seed, size, options)
    OUT/{train,valid}/JPEGImages/<video>/<frame>.jpg
    OUT/{train,valid}/Annotations/<video>/<frame>.png
    OUT/{train,valid}/meta.json                      per object: category, shape, color, size, motion,
                                                     depth (0 = back), radius, centers (x, y per frame),
                                                     frames where it is visible
    OUT/meta_expressions/{train,valid}/meta_expressions.json   + "kind" per expression

The output is byte-identical for a seed: each video has its own random generator, derived from
(seed, split, index), and the PNG / JPEG encoders are deterministic.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import zoom
from tqdm import tqdm

from yofo.errors import InputError
from yofo.video_io import atomic_output_dir, write_palette_png

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 30),
}
SIZES = {"small": (0.10, 0.12), "large": (0.19, 0.23)}  # radius range as a fraction of the frame height
MOTIONS = ("still", "left", "right", "up", "down", "bouncing")
POSITIONS = ("left", "right", "top", "bottom")
CUES = ("appearance", "motion", "position")
SPLITS = ("train", "valid")

# Words, with synonyms; a description is rendered as
#   "the [position adjective] [size] [colour] <noun> [motion phrase] [position phrase]".
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
GENERIC_NOUNS = ("shape", "object", "thing")
MOTION_PHRASES = {
    "still": ("that does not move", "that stays still", "standing still"),
    "left": ("moving left", "going left", "that moves left"),
    "right": ("moving right", "going right", "that moves right"),
    "up": ("moving up", "going up", "that moves up"),
    "down": ("moving down", "going down", "that moves down"),
    "bouncing": ("bouncing back and forth", "that bounces from side to side"),
}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
POSITION_ADJECTIVES = {"left": "leftmost", "right": "rightmost", "top": "highest", "bottom": "lowest"}


@dataclass(frozen=True)
class SynthOptions:
    """Difficulty knobs of the benchmark.

    Attributes:
        min_objects, max_objects: objects per video.
        distractor_p: probability that each object after the first copies the colour and/or the shape of
            an earlier object.
        motion_p: probability of each motion in :data:`MOTIONS` order (still, left, right, up, down,
            bouncing).
        noise: standard deviation of the per-frame pixel noise, as a fraction of 255.
        texture: amplitude of the background texture, as a fraction of 255.
        expressions_per_object: expressions written per object (fewer when fewer minimal descriptions exist).
        cue_weights: relative preference for expressions using appearance, motion and position cues.
        position_margin: mean centroid gap (fraction of the frame width / height) a position word needs.
    """

    min_objects: int = 2
    max_objects: int = 4
    distractor_p: float = 0.75
    motion_p: tuple[float, ...] = (0.25, 0.125, 0.125, 0.125, 0.125, 0.25)
    noise: float = 0.03
    texture: float = 0.12
    expressions_per_object: int = 2
    cue_weights: dict[str, float] = field(default_factory=lambda: {"appearance": 1.0, "motion": 1.0, "position": 1.0})
    position_margin: float = 0.2


@dataclass
class SceneObject:
    """One object of a synthetic video; ``centers`` is (T, 2) float (x, y) in pixels."""

    obj_id: int
    shape: str
    color: str
    size: str
    radius: float
    motion: str
    depth: int
    centers: np.ndarray


@dataclass(frozen=True)
class Description:
    """Cues of one referring expression; None / empty means the cue is not used."""

    appearance: tuple[tuple[str, str], ...]  # sorted (attribute, value) pairs, attribute in shape/color/size
    motion: str | None
    position: str | None

    @property
    def kind(self) -> str:
        """``appearance``, ``motion``, ``position`` or their ``+``-joined combination."""
        used = (bool(self.appearance), self.motion is not None, self.position is not None)
        return "+".join(cue for cue, on in zip(CUES, used) if on)

    @property
    def attributes(self) -> str:
        """The appearance attributes used, e.g. ``color + size``; empty when appearance is not used."""
        return " + ".join(attribute for attribute, _ in self.appearance)


# --------------------------------------------------------------------------------------------- scene
def _trajectory(
    rng: np.random.Generator, motion: str, radius: float, frames: int, height: int, width: int
) -> np.ndarray:
    """Object centres (T, 2) as (x, y). Straight movers may leave the frame by up to about half their size;
    bouncing objects turn at a wall between 35% and 65% of the video; still objects are fully inside."""
    t = np.linspace(0.0, 1.0, frames)
    inner_x, inner_y = (radius, width - 1 - radius), (radius, height - 1 - radius)
    x = np.full(frames, rng.uniform(*inner_x))
    y = np.full(frames, rng.uniform(*inner_y))
    if motion in ("left", "right", "up", "down"):
        horizontal = motion in ("left", "right")
        extent = width if horizontal else height
        low, high = 0.1 * radius, extent - 1 - 0.1 * radius  # centre in frame: at least ~half visible
        distance = min(rng.uniform(0.35, 0.6) * extent, high - low)
        start = rng.uniform(low, high - distance)
        path = start + distance * t if motion in ("right", "down") else start + distance * (1 - t)
        if horizontal:
            x = path
        else:
            y = path
    elif motion == "bouncing":
        turn = rng.uniform(0.35, 0.65)
        span = inner_x[1] - inner_x[0]
        low_speed = 0.25 * width / min(turn, 1 - turn)  # both legs travel at least a quarter of the width
        high_speed = min(1.3 * low_speed, span / max(turn, 1 - turn))  # ... and stay inside the frame
        speed = rng.uniform(low_speed, max(low_speed, high_speed))
        if rng.random() < 0.5:  # turn at the right wall
            x = inner_x[1] - speed * np.abs(t - turn)
        else:
            x = inner_x[0] + speed * np.abs(t - turn)
    return np.stack([x, y], axis=1)


def _shape_masks(obj: SceneObject, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """Boolean (T, H, W) silhouettes of an object, ignoring occlusion. Shapes have similar areas per radius."""
    dx = grid_x[None] - obj.centers[:, 0, None, None]
    dy = grid_y[None] - obj.centers[:, 1, None, None]
    r = obj.radius
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        return (np.abs(dx) <= 0.886 * r) & (np.abs(dy) <= 0.886 * r)
    if obj.shape == "triangle":  # apex up, base below the centre
        return (dy <= 0.8 * r) & (np.abs(dx) <= 1.1 * r * (dy + 1.1 * r) / (1.9 * r))
    arm = 0.38 * r  # cross (plus sign)
    return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= r) & (np.abs(dx) <= arm))


def _sample_objects(
    rng: np.random.Generator, options: SynthOptions, frames: int, height: int, width: int
) -> list[SceneObject]:
    """Draw 2–4 objects; distractors copy the colour and/or shape of an earlier object."""
    count = int(rng.integers(options.min_objects, options.max_objects + 1))
    depths = rng.permutation(count)  # object ids are unrelated to depth order
    objects: list[SceneObject] = []
    for index in range(count):
        shape, color = SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))]
        if objects and rng.random() < options.distractor_p:
            model = objects[rng.integers(len(objects))]
            copy = ("color", "shape", "both")[rng.integers(3)]
            shape = model.shape if copy in ("shape", "both") else shape
            color = model.color if copy in ("color", "both") else color
        size = ("small", "large")[rng.integers(2)]
        radius = rng.uniform(*SIZES[size]) * height
        motion = MOTIONS[rng.choice(len(MOTIONS), p=np.asarray(options.motion_p) / sum(options.motion_p))]
        centers = _trajectory(rng, motion, radius, frames, height, width)
        objects.append(SceneObject(index + 1, shape, color, size, radius, motion, int(depths[index]), centers))
    return objects


def _render_labels(objects: list[SceneObject], height: int, width: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint silhouettes back to front. Returns labels uint8 (T, H, W) and full silhouettes bool (K, T, H, W)."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    silhouettes = np.stack([_shape_masks(obj, grid_x, grid_y) for obj in objects])
    labels = np.zeros((frames, height, width), dtype=np.uint8)
    for k in sorted(range(len(objects)), key=lambda k: objects[k].depth):
        labels[silhouettes[k]] = objects[k].obj_id
    return labels, silhouettes


def _visible_centroids(objects: list[SceneObject], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (K, T, 2) of the visible pixels (NaN where invisible) and visible areas (K, T)."""
    frames, height, width = labels.shape
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    centroids = np.full((len(objects), frames, 2), np.nan)
    areas = np.zeros((len(objects), frames))
    for k, obj in enumerate(objects):
        visible = labels == obj.obj_id
        areas[k] = visible.sum(axis=(1, 2))
        shown = areas[k] > 0
        centroids[k, shown, 0] = (visible * grid_x).sum(axis=(1, 2))[shown] / areas[k, shown]
        centroids[k, shown, 1] = (visible * grid_y).sum(axis=(1, 2))[shown] / areas[k, shown]
    return centroids, areas


def _well_visible(areas: np.ndarray, silhouettes: np.ndarray) -> bool:
    """Every object shows at least a quarter of its area in 3/4 of the frames, and almost all of it (95%)
    in at least one frame, so that its shape, size and stillness can be seen."""
    full = silhouettes.sum(axis=(2, 3)).max(axis=1, keepdims=True)
    mostly = (areas >= 0.25 * full).mean(axis=1) >= 0.75
    return bool((mostly & (areas >= 0.95 * full).any(axis=1)).all())


# ---------------------------------------------------------------------------------------- expressions
def _beyond(
    centroids: np.ndarray, target: int, other: int, position: str, size: tuple[int, int], margin: float
) -> bool:
    """True when ``target`` is further in ``position`` than ``other`` in every frame where both are visible
    (by 5% of the frame extent) and on average over those frames (by ``margin``)."""
    axis = 0 if position in ("left", "right") else 1
    sign = -1.0 if position in ("left", "top") else 1.0
    extent = size[1] if axis == 0 else size[0]
    gap = sign * (centroids[target, :, axis] - centroids[other, :, axis])
    gap = gap[~np.isnan(gap)]
    return gap.size > 0 and bool(gap.min() >= 0.05 * extent and gap.mean() >= margin * extent)


def _referents(
    desc: Description, objects: list[SceneObject], centroids: np.ndarray, size: tuple[int, int], margin: float
) -> list[int]:
    """Indices of the objects a description picks out."""
    candidates = [
        k
        for k, obj in enumerate(objects)
        if all(getattr(obj, attr) == value for attr, value in desc.appearance)
        and (desc.motion is None or obj.motion == desc.motion)
    ]
    if desc.position is None:
        return candidates
    if len(candidates) < 2:  # a position word must choose between candidates
        return []
    return [
        k
        for k in candidates
        if all(_beyond(centroids, k, o, desc.position, size, margin) for o in candidates if o != k)
    ]


def _reductions(desc: Description) -> list[Description]:
    """The descriptions with one cue (one appearance attribute, the motion or the position) dropped."""
    kept = [desc.appearance[:i] + desc.appearance[i + 1 :] for i in range(len(desc.appearance))]
    out = [Description(appearance, desc.motion, desc.position) for appearance in kept]
    if desc.motion is not None:
        out.append(Description(desc.appearance, None, desc.position))
    if desc.position is not None:
        out.append(Description(desc.appearance, desc.motion, None))
    return out


def minimal_descriptions(
    objects: list[SceneObject], centroids: np.ndarray, size: tuple[int, int], margin: float
) -> list[list[Description]]:
    """For each object, every description that picks out that object alone and from which no cue can be dropped."""
    result: list[list[Description]] = []
    for k, obj in enumerate(objects):
        attributes = (("color", obj.color), ("shape", obj.shape), ("size", obj.size))
        found = []
        for n in range(4):
            for appearance in itertools.combinations(attributes, n):
                for motion in (None, obj.motion):
                    for position in (None, *POSITIONS):
                        desc = Description(tuple(sorted(appearance)), motion, position)
                        if _referents(desc, objects, centroids, size, margin) != [k]:
                            continue
                        if all(_referents(r, objects, centroids, size, margin) != [k] for r in _reductions(desc)):
                            found.append(desc)
        result.append(found)
    return result


def describe(desc: Description, rng: np.random.Generator) -> str:
    """Render a description as an English noun phrase, choosing among synonyms."""
    appearance = dict(desc.appearance)
    words = ["the"]
    position_as_adjective = desc.position is not None and rng.random() < 0.3
    if position_as_adjective:
        words.append(POSITION_ADJECTIVES[desc.position])
    if "size" in appearance:
        words.append(SIZE_WORDS[appearance["size"]][rng.integers(2)])
    if "color" in appearance:
        words.append(appearance["color"])
    words.append(appearance.get("shape") or GENERIC_NOUNS[rng.integers(len(GENERIC_NOUNS))])
    if desc.motion is not None:
        phrases = MOTION_PHRASES[desc.motion]
        words.append(phrases[rng.integers(len(phrases))])
    if desc.position is not None and not position_as_adjective:
        words.append(POSITION_PHRASES[desc.position])
    return " ".join(words)


def parse_description(text: str) -> Description:
    """The cues a sentence of this generator names: the inverse of :func:`describe`.

    The vocabulary is closed, so the parse is exact for the generator's sentences (``describe`` then
    ``parse_description`` gives the description back); for other text it returns the cues whose words it
    finds, possibly none.
    """
    text = " ".join(text.lower().split())
    words = set(text.split())
    appearance = [("color", color) for color in COLORS if color in words]
    appearance += [("shape", shape) for shape in SHAPES if shape in words]
    appearance += [("size", size) for size, synonyms in SIZE_WORDS.items() if words & set(synonyms)]
    motion = next((m for m, phrases in MOTION_PHRASES.items() if any(p in text for p in phrases)), None)
    position = next((p for p in POSITIONS if POSITION_PHRASES[p] in text or POSITION_ADJECTIVES[p] in words), None)
    return Description(tuple(sorted(appearance)), motion, position)


def _choose(found: list[Description], rng: np.random.Generator, options: SynthOptions) -> list[Description]:
    """Pick up to ``expressions_per_object`` descriptions, preferring different kinds, weighted by cue."""
    by_kind: dict[str, list[Description]] = {}
    for desc in found:
        by_kind.setdefault(desc.kind, []).append(desc)
    chosen = []
    while by_kind and len(chosen) < options.expressions_per_object:
        kinds = sorted(by_kind)
        weights = np.array([np.mean([options.cue_weights.get(c, 1.0) for c in kind.split("+")]) for kind in kinds])
        if weights.sum() <= 0:
            weights = np.ones(len(kinds))
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        group = by_kind.pop(kind)
        chosen.append(group[rng.integers(len(group))])
    return chosen


# ----------------------------------------------------------------------------------------------- video
@dataclass
class SyntheticVideo:
    """One generated video: frames uint8 (T, H, W, 3), labels uint8 (T, H, W) and its expressions."""

    objects: list[SceneObject]
    frames: np.ndarray
    labels: np.ndarray
    expressions: list[tuple[str, int, str]]  # (text, obj_id, kind)


def _render_frames(
    rng: np.random.Generator, objects: list[SceneObject], labels: np.ndarray, options: SynthOptions
) -> np.ndarray:
    """Textured low-saturation background, flat-coloured objects (jittered per object), per-frame noise."""
    frames, height, width = labels.shape
    base = rng.uniform(70, 180) + rng.uniform(-15, 15, size=3)
    coarse = rng.normal(size=(max(2, height // 12), max(2, width // 12), 1))
    smooth = zoom(coarse, (height / coarse.shape[0], width / coarse.shape[1], 1), order=1)[:height, :width]
    grain = rng.normal(size=(height, width, 1))  # fixed fine texture, gray
    background = base + 255 * options.texture * (0.8 * smooth + 0.4 * grain)
    video = np.repeat(background[None].astype(np.float32), frames, axis=0)
    for obj in objects:
        video[labels == obj.obj_id] = np.asarray(COLORS[obj.color]) + rng.uniform(-20, 20, size=3)
    video += rng.standard_normal(video.shape, dtype=np.float32) * np.float32(255 * options.noise)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def generate_video(
    rng: np.random.Generator, size: tuple[int, int], frames: int, options: SynthOptions
) -> SyntheticVideo:
    """Sample scenes until every object is well visible and has a minimal description, then render it."""
    height, width = size
    for _ in range(1000):
        objects = _sample_objects(rng, options, frames, height, width)
        labels, silhouettes = _render_labels(objects, height, width, frames)
        centroids, areas = _visible_centroids(objects, labels)
        if not _well_visible(areas, silhouettes):
            continue
        found = minimal_descriptions(objects, centroids, size, options.position_margin)
        if all(found):
            break
    else:  # only reachable with contradictory options (e.g. one colour, one shape, no motion)
        raise InputError("synthesize: could not draw a video whose objects can all be described; check the options")
    expressions = []
    for obj, descriptions in zip(objects, found):
        for desc in _choose(descriptions, rng, options):
            expressions.append((describe(desc, rng), obj.obj_id, desc.kind))
    return SyntheticVideo(objects, _render_frames(rng, objects, labels, options), labels, expressions)


def _write_video(root: Path, split: str, name: str, video: SyntheticVideo) -> tuple[dict, dict]:
    """Write frames and masks; return the video's meta.json and meta_expressions.json entries."""
    frame_names = [f"{t:05d}" for t in range(len(video.frames))]
    image_dir = root / split / "JPEGImages" / name
    mask_dir = root / split / "Annotations" / name
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for frame_name, frame, labels in zip(frame_names, video.frames, video.labels):
        # 4:4:4 chroma: the default 4:2:0 smears the colours of small objects, and colour words matter here
        Image.fromarray(frame).save(image_dir / f"{frame_name}.jpg", quality=92, subsampling=0)
        write_palette_png(mask_dir / f"{frame_name}.png", labels)
    objects = {}
    for obj in video.objects:
        visible = [frame_names[t] for t in range(len(frame_names)) if (video.labels[t] == obj.obj_id).any()]
        objects[str(obj.obj_id)] = {
            "category": obj.shape,
            "shape": obj.shape,
            "color": obj.color,
            "size": obj.size,
            "motion": obj.motion,
            "depth": obj.depth,
            "radius": round(float(obj.radius), 2),
            "centers": np.round(obj.centers, 2).tolist(),
            "frames": visible,
        }
    expressions = {
        str(i): {"exp": text, "obj_id": str(obj_id), "kind": kind}
        for i, (text, obj_id, kind) in enumerate(video.expressions)
    }
    return {"objects": objects}, {"expressions": expressions, "frames": frame_names}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")


GENERATOR = "yofo synth"  # synth.json's "generator": what marks a folder as this benchmark


def benchmark_settings(root: str | Path) -> dict[str, Any] | None:
    """The generator settings (the content of ``synth.json``) of a benchmark written by :func:`synthesize`,
    or None when ``root`` is not one."""
    try:
        settings = json.loads((Path(root) / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) and settings.get("generator") == GENERATOR else None


def benchmark_root(path: str | Path) -> Path | None:
    """The synthetic benchmark that ``path`` (a video, frame folder or frame) lies in, or None.

    Footage counts as the benchmark's when it sits inside a folder written by :func:`synthesize`, e.g.
    ``data/synth/valid/JPEGImages/valid00003``: the nearest folder up the path with a ``synth.json``
    whose generator is ``yofo synth``. A copy of the frames elsewhere is not recognised.
    """
    path = Path(path).resolve()
    return next((folder for folder in (path, *path.parents) if benchmark_settings(folder) is not None), None)


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT, unless ``overwrite`` and OUT is an earlier synthetic benchmark."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder is not empty (use --force to replace a synthetic dataset)")
        if benchmark_settings(out) is None:
            raise InputError(f"{out}: not replaced, it has no synth.json so it was not written by `yofo synth`")


def synthesize(
    out: str | Path,
    train: int = 400,
    valid: int = 50,
    seed: int = 0,
    size: tuple[int, int] = (96, 160),
    frames: int = 16,
    options: SynthOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write the synthetic benchmark to ``out`` (atomically: a temporary folder renamed when complete).

    Args:
        out: destination folder; must be absent or empty, or an earlier benchmark when ``overwrite``.
        train, valid: number of videos per split.
        seed: the output is byte-identical for the same seed, sizes and options.
        size: (H, W) of the frames.
        frames: frames per video (>= 6, so that motion and bounces show).
        options: difficulty knobs (:class:`SynthOptions`).
        overwrite: replace an earlier synthetic benchmark at ``out``.
        progress: show a tqdm progress bar (when stderr is a terminal).

    Returns:
        statistics: ``videos`` per split, ``frames``, ``objects``, ``expressions``, ``kinds`` (count per
        kind), ``cue_fraction`` (share of expressions using appearance / motion / position),
        ``distractor_videos`` (share of videos where two objects share a colour or a shape),
        ``seconds`` and ``videos_per_s``.

    Raises:
        InputError: bad arguments or an output folder that must not be replaced.
    """
    options = options or SynthOptions()
    out = Path(out)
    height, width = size
    if train < 0 or valid < 0 or train + valid == 0:
        raise InputError(f"synthesize: train={train}, valid={valid}: need a non-negative count and at least one video")
    if frames < 6:
        raise InputError(f"synthesize: frames={frames} must be >= 6")
    if height < 32 or width < 32:
        raise InputError(f"synthesize: size {height}x{width} must be at least 32x32")
    if not 1 <= options.min_objects <= options.max_objects:
        raise InputError(f"synthesize: objects {options.min_objects}..{options.max_objects} is not a valid range")
    if len(options.motion_p) != len(MOTIONS) or min(options.motion_p) < 0 or sum(options.motion_p) <= 0:
        raise InputError(f"synthesize: motion_p needs {len(MOTIONS)} non-negative weights ({', '.join(MOTIONS)})")
    _check_output(out, overwrite)

    start = time.perf_counter()
    stats: dict[str, Any] = {"videos": {"train": train, "valid": valid}, "frames": 0, "objects": 0, "expressions": 0}
    kinds: dict[str, int] = {}
    distractors = 0
    bar = tqdm(total=train + valid, unit="video", disable=None if progress else True)
    with atomic_output_dir(out) as root, bar:
        settings = {"generator": GENERATOR, "seed": seed, "size": [height, width], "frames": frames}
        _write_json(root / "synth.json", {**settings, "train": train, "valid": valid, "options": asdict(options)})
        for split_index, (split, count) in enumerate(zip(SPLITS, (train, valid))):
            meta, meta_expressions = {}, {}
            for index in range(count):
                rng = np.random.Generator(np.random.PCG64([seed, split_index, index]))
                video = generate_video(rng, size, frames, options)
                name = f"{split}{index:05d}"
                meta[name], meta_expressions[name] = _write_video(root, split, name, video)
                stats["frames"] += frames
                stats["objects"] += len(video.objects)
                stats["expressions"] += len(video.expressions)
                for _, _, kind in video.expressions:
                    kinds[kind] = kinds.get(kind, 0) + 1
                pairs = itertools.combinations(video.objects, 2)
                distractors += any(a.color == b.color or a.shape == b.shape for a, b in pairs)
                bar.update()
            _write_json(root / split / "meta.json", {"videos": meta})
            _write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta_expressions})
    seconds = time.perf_counter() - start
    total = stats["expressions"]
    stats["kinds"] = dict(sorted(kinds.items()))
    stats["cue_fraction"] = {cue: sum(n for k, n in kinds.items() if cue in k.split("+")) / total for cue in CUES}
    stats["distractor_videos"] = distractors / (train + valid)
    stats["seconds"] = seconds
    stats["videos_per_s"] = (train + valid) / seconds
    return stats
