"""Training works end to end: overfitting one synthetic clip drives its region similarity J above 0.9."""

from __future__ import annotations

import csv

import torch

from yofo.config import load_config
from yofo.data.clips import ClipDataset
from yofo.engine.train import train
from yofo.metrics import db_eval_iou
from yofo.model.image_encoder import normalize


def test_overfitting_one_clip_reaches_j_above_0_9(micro, tmp_path, single_thread):
    steps = 100
    cfg = load_config("tiny", micro + [
        "train.overfit=1", "train.batch_size=1", f"train.iters_per_epoch={steps}", "train.stage1.epochs=1",
        "train.stage2.epochs=0", "train.stage1.lr=3e-3", "train.stage1.milestones=[]", "train.log_every=20",
        f"train.checkpoint_every={steps}", "train.bce_weight=1.0",  # from scratch: see yofo.losses
    ])
    model = train(cfg, tmp_path / "run", progress=False)
    assert not model.training

    clip = ClipDataset(cfg, cfg.train.seed)[0]  # the clip of every step
    with torch.no_grad():
        logits = model(normalize(clip["frames"])[None], [clip["text"]])[0, :, 0]
    j = db_eval_iou(clip["masks"][:, 0].numpy() > 0.5, logits.numpy() > 0, clip["valid"][:, 0].numpy() < 0.5)
    assert j.mean() > 0.9, j

    with (tmp_path / "run" / "metrics.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == steps // 20 and losses[-1] < 0.7 * losses[0]
