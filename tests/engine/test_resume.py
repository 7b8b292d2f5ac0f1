"""Resume: an interrupted run, resumed, ends with the weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from yofo.config import load_config
from yofo.engine.checkpoint import read_metadata
from yofo.engine.train import latest_checkpoint, train

# Steps 1 | 2 3 in stages 1 | 2: the resumed runs below cross the stage boundary and restart inside stage 2.
SCHEDULE = ["train.iters_per_epoch=1", "train.stage1.epochs=1", "train.stage2.epochs=2", "train.checkpoint_every=1",
            "train.stage2.milestones=[1]"]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Same tensors bit for bit and same metadata (the header's key order is not fixed by safetensors)."""
    assert read_metadata(a) == read_metadata(b)
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k in ("step", "stage", "loss", "lr")} for row in csv.DictReader(f)]


def test_resume_at_and_after_the_stage_boundary_is_exact(micro, tmp_path, single_thread):
    cfg = load_config("tiny", micro + SCHEDULE)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg, whole, progress=False)
    train(cfg, parts, max_steps=1, progress=False)  # ends on the last step of stage 1
    train(cfg, parts, resume=True, max_steps=2, progress=False)  # a fresh stage-2 optimizer
    # The stage-2 optimizer and scheduler restored; clips now come from loader workers, which changes nothing.
    train(load_config("tiny", micro + SCHEDULE + ["data.num_workers=2"]), parts, resume=True, progress=False)
    assert_same_checkpoint(whole / "model.safetensors", parts / "model.safetensors")
    a, b = (torch.load(latest_checkpoint(o) / "train_state.pt", weights_only=True) for o in (whole, parts))
    assert a["step"] == b["step"] == 3 and a["scheduler"]["last_epoch"] == 2
    for key, value in a["optimizer"]["state"].items():
        assert all(torch.equal(value[k], b["optimizer"]["state"][key][k]) for k in value)
    assert metrics(whole) == metrics(parts) and [r["step"] for r in metrics(parts)] == ["1", "2", "3"]
    assert float(metrics(parts)[2]["lr"]) == pytest.approx(0.2 * float(metrics(parts)[1]["lr"]))
    # Each start of the run is recorded with what decides its bits besides the config and data.
    starts = json.loads((parts / "environment.json").read_text())
    assert [s["start_step"] for s in starts] == [0, 1, 2]
    assert starts[0] == json.loads((whole / "environment.json").read_text())[0]
    assert starts[0]["num_threads"] == 1 and starts[0]["device"] == "cpu" and starts[0]["world_size"] == 1
    assert starts[0]["torch"] == torch.__version__ and starts[0]["cpu_capability"] and starts[0]["cpu"]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_bit_identical_weights(micro, tmp_path, run_yofo):
    """Two SIGKILLs, soon after the checkpoints at the stage boundary (step 3) and inside stage 2 (step 6), each
    followed by --resume; CPU with the default kernels."""
    args = ["train", "tiny", *micro, "train.iters_per_epoch=3", "train.stage1.epochs=1", "train.stage2.epochs=2",
            "train.checkpoint_every=3", "train.stage2.milestones=[1]", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    result = run_yofo(*args, "--out", str(whole), cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    for kill_after in (3, 6):  # kill once a checkpoint at or after this step exists
        process = run_yofo(*args, "--out", str(killed), "--resume", cwd=tmp_path, background=True)
        try:
            while True:
                folder = latest_checkpoint(killed)
                if folder is not None and int(folder.name[5:]) >= kill_after:
                    break
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
            process.stderr.close()
        assert process.returncode == -signal.SIGKILL
    result = run_yofo(*args, "--out", str(killed), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_checkpoint(whole / "model.safetensors", killed / "model.safetensors")
    assert [r["step"] for r in metrics(killed)] == [str(s) for s in range(1, 10)]
    assert metrics(whole) == metrics(killed)
