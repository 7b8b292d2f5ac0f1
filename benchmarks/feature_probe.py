"""What a trained model's frame and sentence features carry about objects, and where its sentences ground.

Usage: .venv/bin/python benchmarks/feature_probe.py --checkpoint CKPT --data DIR [--train-videos 150]
           [--valid-videos 50] [--every 5] [--out FILE.md]

Three tables, on a benchmark made by ``yofo synth``.

Linear probes. For every object visible in every ``--every``-th frame, each feature map of the model (the image encoder's
layer1..layer4, Φ, the input of the Meta-Transfer solver, and V_i, the image projection of feature
mining at each scale) is averaged over the object's mask, weighted by the share of each cell the mask
covers. A linear classifier per map and attribute (colour, shape, size; from ``yofo synth``'s
``meta.json``) is trained on the train split's objects and scored on the valid split's. The accuracy says
how linearly decodable the attribute is from that map, next to chance (the valid split's most frequent
class).

Grounding per kind of expression. For each valid expression, the J of the model's masks (at the model's
input size) beside what feature mining's target labels Y already say: the readout of Y
(``feature_mining.label_readout``, trained by the deep supervision ``train.aux_weight``; meaningless for
a checkpoint trained without it) as a probability, averaged over the target's cells and over the other
objects' cells. Y that gives both the same probability has not told the target apart; nothing after
feature mining sees the sentence. Appearance expressions are split by the words they use (size, colour,
shape). This is how the demo model's weak colour, shape and motion expressions were traced
(``checkpoints/README.md``).

Linear probes of the sentences. The same probes read the colour, shape and size a sentence names from its
text features where feature mining uses them (z_i and W_z z_i at each fused scale), trained on the train
split's distinct sentences and scored on the valid split's that are not also train sentences. Grounding a
colour needs it on both sides of a fusion block: in V_i and in W_z z_i of the same scale.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from yofo.data.clips import mean_colour, pad_to
from yofo.data.records import VOID, Expression, Video, get_field, read_frame, read_json, read_mask
from yofo.data.synthetic import parse_description
from yofo.data.ytvos import load_ytvos
from yofo.engine.checkpoint import load_model
from yofo.errors import DatasetError, YofoError
from yofo.files import atomic_write
from yofo.metrics import db_eval_iou
from yofo.predictor import fit_size

ATTRIBUTES = ("color", "shape", "size")
MIN_PIXELS = 20  # objects mostly hidden in a frame are left out


def load_frame(video: Video, t: int, box: Sequence[int], mean: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``t`` as the model sees it and its ids: ``(3, Hp, Wp)`` in [0, 1] and ``(Hp, Wp)`` uint8.

    Fitted inside ``box`` keeping the aspect ratio and padded to multiples of 32 as at inference; the padding
    has the encoder's ``mean`` colour and void ids.
    """
    frame = read_frame(video.frame_paths[t], box)
    _, padded = fit_size(*frame.shape[:2], box)
    ids = torch.tensor(pad_to(read_mask(video.mask_paths[t], box), padded, VOID))
    return torch.tensor(pad_to(frame, padded, mean_colour(mean))).permute(2, 0, 1).float() / 255, ids


def feature_maps(model, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-frame maps of ``model`` for ``image (1, 3, H, W)`` in [0, 1]: name -> ``(1, C, h, w)``."""
    layers = model.image_encoder(model.normalize(image))
    maps = {f"layer{i + 1}": layer for i, layer in enumerate(layers)}
    motion = model.feature_mining.motion_map(layers[1])  # a single frame: what a video's first frame shows
    if model.meta_transfer is not None:
        maps["Φ (solver input)"] = model.meta_transfer.features(layers[2], motion)
    for key, part in model.feature_mining.image_part(layers[1:], motion).items():
        maps[f"V{int(key) + 1} (layer{int(key) + 2})"] = part["visual"] if isinstance(part, dict) else part
    return maps


def masked_means(maps: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean of each map over ``mask (H, W)`` (bool, at the input size), weighting cells by their coverage."""
    weights = mask.float()[None, None]
    means = {}
    for name, fmap in maps.items():
        cover = F.adaptive_avg_pool2d(weights, fmap.shape[-2:])
        means[name] = ((fmap * cover).sum((2, 3)) / cover.sum())[0].numpy()
    return means


def collect(model, root: Path, split: str, videos: int, every: int) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Per visible object and sampled frame: pooled features ``{map: (N, C)}`` and ``{attribute: N labels}``."""
    path = root / split / "meta.json"
    meta = get_field(read_json(path), "videos", dict, lambda: str(path))
    box = tuple(model.cfg.input_size)
    features: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list] = {a: [] for a in ATTRIBUTES}
    for video in load_ytvos(root, split)[:videos]:
        objects = meta.get(video.name, {}).get("objects", {})
        for obj_id, attributes in objects.items():
            missing = [a for a in ATTRIBUTES if a not in attributes]
            if missing:
                raise DatasetError(f"{path}: video {video.name} object {obj_id} has no field "
                                   f"'{missing[0]}'; expected a benchmark made by `yofo synth`")
        for t in range(0, len(video.frame_paths), every):
            if video.mask_paths[t] is None:
                continue
            frame, ids = load_frame(video, t, box, model.image_encoder.mean)
            with torch.inference_mode():
                maps = feature_maps(model, frame[None])
                for obj_id, attributes in objects.items():
                    mask = ids == int(obj_id)
                    if mask.sum() < MIN_PIXELS:
                        continue
                    for name, mean in masked_means(maps, mask).items():
                        features.setdefault(name, []).append(mean)
                    for attribute in ATTRIBUTES:
                        labels[attribute].append(attributes[attribute])
    return {name: np.stack(rows) for name, rows in features.items()}, labels


def probe_accuracy(train_x: np.ndarray, train_y: Sequence, test_x: np.ndarray, test_y: Sequence,
                   steps: int = 500, seed: int = 0) -> float:
    """Accuracy on ``test`` of a linear softmax classifier trained on ``train`` (standardised features).

    Args:
        train_x, test_x: ``(N, C)`` and ``(M, C)`` features.
        train_y, test_y: N and M class labels (any hashable values; test classes unseen in train count as wrong).
    """
    classes = sorted(set(train_y))
    x, xt = torch.tensor(train_x, dtype=torch.float32), torch.tensor(test_x, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    y = torch.tensor([classes.index(c) for c in train_y])
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], len(classes))
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(linear(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = [classes[i] for i in linear(xt).argmax(1).tolist()]
    return float(np.mean([p == t for p, t in zip(predicted, test_y)]))


def probe_table(train: tuple[dict, dict], test: tuple[dict, dict], first_column: str = "features",
                count_row: str | None = None) -> str:
    """Markdown table: one row per feature, the probe accuracy per attribute, after a row of chance.

    Args:
        train, test: ``({feature: (N, C)}, {attribute: N labels})``. A label may be ``None`` where a sample does
            not have the attribute (a sentence that does not name it): that sample is left out of the
            attribute's probe, and an attribute without train or test samples gets ``n/a``.
        first_column: header of the feature column.
        count_row: if given, a first row with this name and the number of test samples per attribute.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    counts, columns = [], []
    for attribute in ATTRIBUTES:
        picked = [[k for k, label in enumerate(y[attribute]) if label is not None] for y in (train_y, test_y)]
        fit_y, score_y = ([y[attribute][k] for k in rows] for y, rows in zip((train_y, test_y), picked))
        counts.append(str(len(score_y)))
        if not fit_y or not score_y:
            columns.append(["n/a"] * (len(train_x) + 1))
            continue
        chance = max(score_y.count(c) for c in set(score_y)) / len(score_y)
        columns.append([f"{chance:.2f}"] + [
            f"{probe_accuracy(train_x[name][picked[0]], fit_y, test_x[name][picked[1]], score_y):.2f}"
            for name in train_x])
    names = ["chance (most frequent class)", *train_x]
    lines = [f"| {first_column} | " + " | ".join(ATTRIBUTES) + " |", "|---|" + "---|" * len(ATTRIBUTES)]
    if count_row is not None:
        lines.append(f"| {count_row} | " + " | ".join(counts) + " |")
    lines += [f"| {name} | " + " | ".join(column[i] for column in columns) + " |" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def sentence_attributes(text: str) -> dict[str, str | None]:
    """The colour, shape and size (``small``/``large``) a sentence names; ``None`` for one it does not name."""
    named = dict(parse_description(text).appearance)
    return {attribute: named.get(attribute) for attribute in ATTRIBUTES}


def text_features(model, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Each sentence's features where feature mining uses them: name -> ``(N, C)``.

    Per fused scale i: z_i (L2-normalised, as the fusion block reads it) and W_z z_i, the term the sentence
    adds to every cell of the multi-modal map M_i before its BatchNorm and ReLU (:mod:`yofo.model.fusion`).
    """
    with torch.inference_mode():
        z = F.normalize(model.encode_text(list(texts)), dim=2)  # (N, 3, C)
        features = {}
        for key, block in model.feature_mining.fuse.items():
            i = int(key)
            features[f"z{i + 1}"] = z[:, i].numpy()
            features[f"W_z z{i + 1} (into M{i + 1})"] = block.mm_text(z[:, i]).numpy()
    return features


def sentence_probe_table(model, root: Path, train_videos: int, valid_videos: int) -> tuple[str, int, int]:
    """Linear probes of the attributes a sentence names, from its text features (:func:`text_features`).

    Distinct sentences of the first videos of each split; valid sentences that also occur in train are left
    out, so a probe cannot score by recognising a sentence it was trained on.

    Returns:
        the markdown table (one row per feature after the valid counts and chance) and the numbers of train and
        valid sentences.
    """
    train = sorted({e.text for v in load_ytvos(root, "train")[:train_videos] for e in v.expressions})
    valid = sorted({e.text for v in load_ytvos(root, "valid")[:valid_videos] for e in v.expressions} - set(train))
    if not train or not valid:
        raise YofoError(f"{root}: no valid sentence that is not also a train sentence")

    def split(texts: list[str]) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        named = [sentence_attributes(text) for text in texts]
        return text_features(model, texts), {a: [n[a] for n in named] for a in ATTRIBUTES}

    table = probe_table(split(train), split(valid), "text features", "valid sentences naming it")
    return table, len(train), len(valid)


def expression_group(expression: Expression) -> str:
    """The expression's kind; for appearance alone, with the attributes it names, e.g. ``appearance: color``."""
    if expression.kind != "appearance":
        return str(expression.kind)
    return "appearance: " + (parse_description(expression.text).attributes or "other")


def grounding(model, root: Path, videos: int) -> dict[str, dict[str, list[float]]]:
    """Per expression group: the J of each expression and Y's readout probability on the target and on the others.

    Returns:
        ``{group: {"J": [...], "target": [...], "others": [...]}}``, one value per expression ("others" is NaN
        for a video with a single object).
    """
    box = tuple(model.cfg.input_size)
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for video in load_ytvos(root, "valid")[:videos]:
        expressions = [e for e in video.expressions if e.obj_id is not None]
        loaded = [load_frame(video, t, box, model.image_encoder.mean) for t in range(len(video.frame_paths)) if video.mask_paths[t]]
        frames, ids = torch.stack([f for f, _ in loaded]), torch.stack([i for _, i in loaded])  # (T, 3, H, W), (T, H, W)
        with torch.inference_mode():
            clips = model.normalize(frames)[None].expand(len(expressions), *frames.shape)
            logits, readout = model(clips, [e.text for e in expressions], label_logits=True)
        void = (ids == VOID).numpy()
        for k, expression in enumerate(expressions):
            target, others = ids == expression.obj_id, (ids > 0) & (ids != expression.obj_id) & (ids != VOID)
            probability = torch.sigmoid(readout[k, :, 0])  # (T, h, w)

            def mean_over(region: torch.Tensor) -> float:
                cover = F.adaptive_avg_pool2d(region.float()[:, None], probability.shape[-2:])[:, 0]
                return float((probability * cover).sum() / cover.sum()) if cover.sum() > 0 else float("nan")

            row = stats[expression_group(expression)]
            row["J"].append(float(np.mean(db_eval_iou(target.numpy(), (logits[k, :, 0] > 0).numpy(), void))))
            row["target"].append(mean_over(target))
            row["others"].append(mean_over(others))
    return stats


def grounding_table(stats: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table of :func:`grounding`: one row per group (all expressions first), means over expressions."""
    everything = {key: [v for row in stats.values() for v in row[key]] for key in ("J", "target", "others")}
    lines = ["| expressions | n | J of the masks | Y readout on the target | Y readout on the other objects |",
             "|---|---|---|---|---|"]
    for name, row in [("all", everything), *sorted(stats.items())]:
        lines.append(f"| {name} | {len(row['J'])} | {np.mean(row['J']):.3f} | {np.nanmean(row['target']):.3f} "
                     f"| {np.nanmean(row['others']):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and with ``--out`` write) the three tables; 0 on success, 2 on a yofo error."""
    parser = argparse.ArgumentParser(prog="benchmarks/feature_probe.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a yofo checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="a benchmark made by `yofo synth`")
    parser.add_argument("--train-videos", type=int, default=150, help="train videos the probes learn from (150)")
    parser.add_argument("--valid-videos", type=int, default=50, help="valid videos the probes are scored on (50)")
    parser.add_argument("--every", type=int, default=5, help="use every N-th frame (5)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    if min(args.train_videos, args.valid_videos, args.every) < 1:
        parser.error("--train-videos, --valid-videos and --every must be >= 1")
    try:
        model = load_model(args.checkpoint).eval()
        train = collect(model, args.data, "train", args.train_videos, args.every)
        test = collect(model, args.data, "valid", args.valid_videos, args.every)
        if not train[0] or not test[0]:
            raise YofoError(f"{args.data}: no visible object in the sampled frames")
        grounded = grounding(model, args.data, args.valid_videos)
        sentences, train_sentences, valid_sentences = sentence_probe_table(model, args.data, args.train_videos,
                                                                           args.valid_videos)
    except YofoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = (f"Linear probes of `{args.checkpoint.name}` on `{args.data}`: {len(train[1]['color'])} train and "
             f"{len(test[1]['color'])} valid object views (every {args.every}th frame).\n\n" + probe_table(train, test)
             + f"\nGrounding of the {sum(len(r['J']) for r in grounded.values())} expressions of the first "
             f"{args.valid_videos} valid videos: J of the masks and the mean probability of Y's readout.\n\n"
             + grounding_table(grounded)
             + f"\nLinear probes of the attributes the sentences name, from their text features: "
             f"{train_sentences} train and {valid_sentences} valid distinct sentences (none in both).\n\n"
             + sentences)
    print(table, end="")
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
