"""DDP with two CPU processes (gloo): same weights on both ranks, disjoint clips, one checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from yofo.engine.train import clip_indices

# Run by torchrun in each process: `yofo train` through the command line, recording which clips this rank
# loaded and a digest of the weights it ends with.
SCRIPT = """
import hashlib, json, os, sys
import yofo.engine.train as engine
from yofo.cli import main

seen = []

class RecordingClips(engine.ClipDataset):
    def __getitem__(self, index):
        item = super().__getitem__(index)
        seen.append([index, item["source"]])
        return item

models = []
train = engine.train
engine.ClipDataset = RecordingClips
engine.train = lambda *args, **kwargs: models.append(train(*args, **kwargs)) or models[-1]
code = main(sys.argv[2:])
digest = hashlib.sha256()
for name, tensor in sorted(models[0].state_dict().items()):
    digest.update(name.encode() + tensor.numpy().tobytes())
with open(f"{sys.argv[1]}/rank{os.environ['RANK']}.json", "w") as f:
    json.dump({"code": code, "seen": seen, "digest": digest.hexdigest()}, f)
"""


def test_two_processes_train_one_model_on_disjoint_clips(micro, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    steps, batch = 3, 4
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
        str(tmp_path), "train", "tiny", *micro, f"train.batch_size={batch}", "train.iters_per_epoch=1",
        "train.stage1.epochs=2", "train.stage2.epochs=1", "train.checkpoint_every=2", "--out", str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]  # e.g. DDP's FutureWarning on broadcast_buffers
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["code"] for r in ranks] == [0, 0]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept the replicas identical
    for rank, record in enumerate(ranks):
        assert [index for index, _ in record["seen"]] == [i for s in range(steps) for i in clip_indices(s, batch, rank, 2)]
    sources = [{source for _, source in r["seen"]} for r in ranks]
    assert sources[0] and sources[1] and sources[0] != sources[1]
    # Rank 0 alone wrote: one checkpoint folder (the final one), one metrics row per step.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "environment.json", "metrics.csv",
                                                     "model.safetensors", "tensorboard"]
    assert [(s["start_step"], s["world_size"]) for s in json.loads((out / "environment.json").read_text())] == [(0, 2)]
    assert len(list((out / "tensorboard").iterdir())) == 1
    with (out / "metrics.csv").open() as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2", "3"]
