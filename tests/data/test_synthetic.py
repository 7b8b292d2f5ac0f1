"""The synthetic benchmark: layout, determinism, safety of the output folder, and an independent check that every
expression picks out exactly its object.

The check does not use the generator's choices: it parses each sentence back into constraints with its own
grammar, takes shape / colour / size from the per-object attributes in meta.json (and checks the colour
against the rendered pixels), and decides motion and position from the rendered masks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

import yofo.data.synthetic as synthetic
from yofo.data.records import read_frame, read_mask
from yofo.data.stats import video_stats
from yofo.data.synthetic import SynthOptions, synthesize
from yofo.data.ytvos import load_ytvos
from yofo.errors import InputError

NOMINAL_RGB = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225),
    "yellow": (235, 205, 40), "purple": (150, 60, 200), "orange": (245, 135, 30),
}
SHAPES = {"circle", "square", "triangle", "cross"}
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
NOUNS = {"shape", "object", "thing"}
MOTION_PATTERNS = [
    (re.compile(r"\b(?:moving|going|that moves) (left|right|up|down)\b"), None),
    (re.compile(r"\b(?:that does not move|that stays still|standing still)\b"), "still"),
    (re.compile(r"\b(?:bouncing back and forth|that bounces from side to side)\b"), "bouncing"),
]
POSITION_PATTERNS = [
    (re.compile(r"\bon the (left|right)\b"), None),
    (re.compile(r"\bat the (top|bottom)\b"), None),
    (re.compile(r"\b(leftmost|rightmost|highest|lowest)\b"), {"leftmost": "left", "rightmost": "right", "highest": "top", "lowest": "bottom"}),
]


def parse(text: str) -> dict[str, str]:
    """Constraints of a sentence: any of color, shape, size, motion, position."""
    constraints: dict[str, str] = {}
    rest = text
    for key, patterns in (("motion", MOTION_PATTERNS), ("position", POSITION_PATTERNS)):
        for pattern, value in patterns:
            match = pattern.search(rest)
            if match:
                assert key not in constraints, f"two {key} phrases in {text!r}"
                constraints[key] = value if isinstance(value, str) else (value or {}).get(match.group(1), match.group(1))
                rest = rest[: match.start()] + rest[match.end() :]
    words = rest.split()
    assert words[0] == "the", text
    for word in words[1:]:
        if word in NOMINAL_RGB:
            constraints["color"] = word
        elif word in SHAPES:
            constraints["shape"] = word
        elif word in SIZE_WORDS:
            constraints["size"] = SIZE_WORDS[word]
        else:
            assert word in NOUNS, f"unknown word {word!r} in {text!r}"
    return constraints


def observed_motion(visible: np.ndarray, width: int, height: int) -> str:
    """Motion of one object from its visible masks (T, H, W)."""
    areas = visible.sum(axis=(1, 2))
    if visible.any(axis=0).sum() <= 1.15 * areas.max():  # every mask inside one silhouette: it does not move
        return "still"
    shown = np.flatnonzero(areas)
    grid_y, grid_x = np.mgrid[0 : visible.shape[1], 0 : visible.shape[2]]
    xs = np.array([grid_x[visible[t]].mean() for t in shown])
    ys = np.array([grid_y[visible[t]].mean() for t in shown])
    out, back = xs - xs[0], xs - xs[-1]  # a bounce goes out and comes back, both by 10% of the width
    if ((np.sign(out) == np.sign(back)) & (np.minimum(abs(out), abs(back)) >= 0.1 * width)).any():
        return "bouncing"
    dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "up" if dy < 0 else "down"


def further(centroids: dict[int, np.ndarray], a: int, b: int, position: str, height: int, width: int) -> bool:
    """``a`` is further left/right/up/down than ``b`` in every frame both are visible, by 10% on average."""
    axis = 0 if position in ("left", "right") else 1
    sign = -1 if position in ("left", "top") else 1
    gap = sign * (centroids[a][:, axis] - centroids[b][:, axis])
    gap = gap[~np.isnan(gap)]
    extent = width if axis == 0 else height
    return gap.size > 0 and bool((gap > 0).all()) and gap.mean() >= 0.1 * extent


def check_video(root: Path, split: str, name: str, meta: dict, expressions: dict) -> None:
    frames = expressions["frames"]
    labels = np.stack([read_mask(root / split / "Annotations" / name / f"{f}.png") for f in frames])
    images = np.stack([read_frame(root / split / "JPEGImages" / name / f"{f}.jpg") for f in frames]).astype(float)
    _, height, width = labels.shape
    objects = {int(k): v for k, v in meta["objects"].items()}
    assert set(np.unique(labels)) - {0} <= set(objects)
    truth, centroids = {}, {}
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    for obj_id, attributes in objects.items():
        visible = labels == obj_id
        assert visible.any(), f"{name}: object {obj_id} never visible"
        colour = images[visible].mean(axis=0)
        nearest = min(NOMINAL_RGB, key=lambda c: np.sum((np.array(NOMINAL_RGB[c]) - colour) ** 2))
        assert nearest == attributes["color"], f"{name}: object {obj_id} looks {nearest}"
        truth[obj_id] = {
            "color": attributes["color"], "shape": attributes["shape"], "size": attributes["size"],
            "motion": observed_motion(visible, width, height),
        }
        areas = visible.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            centroids[obj_id] = np.stack(
                [(visible * grid_x).sum(axis=(1, 2)) / areas, (visible * grid_y).sum(axis=(1, 2)) / areas], axis=1
            )
    described = set()
    for exp_id, entry in expressions["expressions"].items():
        constraints = parse(entry["exp"])
        cues = {"appearance": bool({"color", "shape", "size"} & set(constraints)), "motion": "motion" in constraints,
                "position": "position" in constraints}
        assert entry["kind"] == "+".join(c for c, used in cues.items() if used), entry
        position = constraints.pop("position", None)
        candidates = [k for k, t in truth.items() if all(t[key] == value for key, value in constraints.items())]
        if position is not None:
            candidates = [k for k in candidates if all(further(centroids, k, o, position, height, width) for o in candidates if o != k)]
        assert candidates == [int(entry["obj_id"])], f"{split}/{name} expression {exp_id} {entry['exp']!r} fits {candidates}"
        described.add(int(entry["obj_id"]))
    assert described == set(objects), f"{name}: objects without an expression"


def test_every_expression_picks_out_exactly_its_object(synth_root: Path) -> None:
    checked = 0
    distractor_videos = 0
    for split in ("train", "valid"):
        meta = json.loads((synth_root / split / "meta.json").read_text())["videos"]
        expressions = json.loads((synth_root / "meta_expressions" / split / "meta_expressions.json").read_text())["videos"]
        assert set(meta) == set(expressions)
        for name in expressions:
            check_video(synth_root, split, name, meta[name], expressions[name])
            checked += len(expressions[name]["expressions"])
            objects = list(meta[name]["objects"].values())
            assert 2 <= len(objects) <= 4
            distractor_videos += any(
                a["color"] == b["color"] or a["shape"] == b["shape"] for i, a in enumerate(objects) for b in objects[i + 1 :]
            )
    assert checked >= 60
    assert distractor_videos >= 0.5 * 30


def test_parse_description_inverts_describe(synth_root: Path) -> None:
    """Every description the generator can render, with every synonym, parses back to itself; and the benchmark's
    sentences parse to their kind and to the constraints this file's independent parser reads."""
    rng = np.random.default_rng(0)
    appearances = [()] + [tuple(sorted(c)) for n in (1, 2, 3) for c in itertools.combinations(
        [("color", "red"), ("shape", "cross"), ("size", "small")], n)]
    for appearance in appearances:
        for motion in (None, *synthetic.MOTIONS):
            for position in (None, *synthetic.POSITIONS):
                desc = synthetic.Description(appearance, motion, position)
                for _ in range(8):  # the synonyms and both places of a position word
                    text = synthetic.describe(desc, rng)
                    assert synthetic.parse_description(text) == desc, text
    for split in ("train", "valid"):
        expressions = json.loads((synth_root / "meta_expressions" / split / "meta_expressions.json").read_text())
        for video in expressions["videos"].values():
            for entry in video["expressions"].values():
                desc = synthetic.parse_description(entry["exp"])
                assert desc.kind == entry["kind"]
                named = {**dict(desc.appearance), "motion": desc.motion, "position": desc.position}
                assert {k: v for k, v in named.items() if v is not None} == parse(entry["exp"])


def test_readers_load_the_benchmark_like_real_data(synth_root: Path) -> None:
    for split, count in (("train", 24), ("valid", 6)):
        videos = load_ytvos(synth_root, split)
        assert len(videos) == count
        assert all(len(v.frame_paths) == 10 and all(p is not None for p in v.mask_paths) for v in videos)
        assert all(e.obj_id is not None and e.kind for v in videos for e in v.expressions)
        stats = video_stats(videos)
        assert stats["problems"] == [] and stats["masks"] == 10 * count
        assert set(stats["kinds"]) <= {"appearance", "motion", "position", "appearance+motion",
                                       "appearance+position", "motion+position", "appearance+motion+position"}
    assert read_frame(videos[0].frame_paths[0]).shape == (64, 96, 3)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    kwargs = dict(train=3, valid=1, size=(40, 64), frames=6)
    first, second, third = synthesize(tmp_path / "a", seed=5, **kwargs), synthesize(tmp_path / "b", seed=5, **kwargs), None
    assert first["expressions"] == second["expressions"] and first["kinds"] == second["kinds"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    third = synthesize(tmp_path / "c", seed=6, **kwargs)
    assert third["videos_per_s"] > 0
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert abs(sum(first["cue_fraction"].values())) >= 1.0  # every expression uses at least one cue


def test_output_folder_is_protected_and_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        synthesize(out, train=1, valid=0, size=(40, 64), frames=6)
    with pytest.raises(InputError, match="no synth.json"):
        synthesize(out, train=1, valid=0, size=(40, 64), frames=6, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"

    bench = tmp_path / "bench"
    synthesize(bench, train=1, valid=0, size=(40, 64), frames=6)
    synthesize(bench, train=2, valid=0, size=(40, 64), frames=6, overwrite=True)
    assert len(load_ytvos(bench, "train")) == 2

    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = synthetic.generate_video
    monkeypatch.setattr(synthetic, "generate_video", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "interrupted", train=3, valid=0, size=(40, 64), frames=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "out"]  # nothing half-written, no temp folder


def test_bad_arguments_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="frames=3"):
        synthesize(tmp_path / "x", train=1, valid=0, frames=3)
    with pytest.raises(InputError, match="size"):
        synthesize(tmp_path / "x", train=1, valid=0, size=(16, 16))
    with pytest.raises(InputError, match="motion_p"):
        synthesize(tmp_path / "x", train=1, valid=0, options=SynthOptions(motion_p=(1.0,)))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_default_sized_benchmark_passes_the_independent_check(tmp_path: Path) -> None:
    stats = synthesize(tmp_path / "bench", train=150, valid=0, seed=21)  # default size 96x160, 16 frames
    meta = json.loads((tmp_path / "bench" / "train" / "meta.json").read_text())["videos"]
    expressions = json.loads((tmp_path / "bench" / "meta_expressions" / "train" / "meta_expressions.json").read_text())
    for name, entry in expressions["videos"].items():
        check_video(tmp_path / "bench", "train", name, meta[name], entry)
    assert stats["distractor_videos"] >= 0.5
    assert all(share >= 0.2 for share in stats["cue_fraction"].values())  # every cue is well represented
