"""yofo train: the two-stage recipe, the files of a run, and one-line errors that overwrite nothing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

import yofo
from yofo.cli import main
from yofo.config import load_config
from yofo.data.synthetic import synthesize
from yofo.engine.checkpoint import read_metadata
from yofo.engine.train import clip_indices, parameter_groups
from yofo.model.yofo import build_model

TWO_STAGES = ["train.iters_per_epoch=1", "train.stage1.epochs=1", "train.stage2.epochs=1", "train.checkpoint_every=1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_each_rank_takes_its_share_of_the_global_batch():
    ranks = [clip_indices(3, 4, rank, 2) for rank in range(2)]
    assert ranks == [[12, 14], [13, 15]]
    assert clip_indices(3, 4) == [12, 13, 14, 15]
    assert clip_indices(3, 4, overfit=1) == [0, 0, 0, 0]


def test_parameter_groups_follow_the_two_stage_recipe(micro):
    cfg = load_config("tiny", micro + ["model.text_encoder.store_weights=true"])
    model = build_model(cfg.model)

    groups = {g["name"]: g for g in parameter_groups(model, cfg.train.stage1)}
    assert set(groups) == {"reg", "phi", "feature_mining", "text_proj", "decoder"}
    lr = cfg.train.stage1.lr
    assert groups["reg"]["lr"] == pytest.approx(0.5 * lr) and groups["phi"]["lr"] == pytest.approx(0.1 * lr)
    assert groups["decoder"]["lr"] == pytest.approx(0.5 * lr) and groups["feature_mining"]["lr"] == pytest.approx(lr)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(("image_encoder.", "text_encoder.bert.", "feature_mining.label_readout."))}

    groups = {g["name"]: g for g in parameter_groups(model, cfg.train.stage2)}
    assert set(groups) == {"reg", "phi", "feature_mining", "text_proj", "decoder", "image_encoder", "text_encoder"}
    assert {g["lr"] for g in groups.values()} == {cfg.train.stage2.lr}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith((
        "image_encoder.conv1", "image_encoder.bn1", "image_encoder.layer1.", "feature_mining.label_readout."))}
    assert not model.feature_mining.label_readout.weight.requires_grad  # no deep supervision: no gradient
    parameter_groups(model, cfg.train.stage2, deep_supervision=True)
    assert model.feature_mining.label_readout.weight.requires_grad
    model.cfg.decoder.label_skip = True  # the readout is then part of the output
    parameter_groups(model, cfg.train.stage2)
    assert model.feature_mining.label_readout.weight.requires_grad
    model.cfg.decoder.label_skip = False
    model.cfg.text_encoder.store_weights = False  # a checkpoint would not hold a trained transformer
    assert "text_encoder" not in {g["name"] for g in parameter_groups(model, cfg.train.stage2)}
    assert not any(p.requires_grad for p in model.text_encoder.bert.parameters())


def test_motion_aware_fm_trains_with_feature_mining(micro):
    """The motion map and its ways into the fusion and into Φ start at zero: they learn at feature mining's rate."""
    cfg = load_config("tiny", micro + ["model.fm.motion.window=2"])
    model = build_model(cfg.model)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in parameter_groups(model, cfg.train.stage1)}
    motion = [p for n, p in model.named_parameters() if "motion" in n]
    assert any(p is model.meta_transfer.phi_motion.weight for p in motion)
    assert motion and all(id(p) in groups["feature_mining"] for p in motion)


def test_a_run_writes_weights_state_and_metrics_and_refuses_to_overwrite(micro, synth_root, tmp_path, capsys,
                                                                         monkeypatch, single_thread):
    out = tmp_path / "run"
    assert main(["train", "tiny", *micro, *TWO_STAGES, "--out", str(out), "--no-progress"]) == 0
    folders = list((out / "checkpoints").iterdir())
    assert [f.name for f in folders] == ["step_00000002"]
    assert sorted(p.name for p in folders[0].iterdir()) == ["model.safetensors", "train_state.pt"]
    assert (out / "model.safetensors").samefile(folders[0] / "model.safetensors") or \
        (out / "model.safetensors").read_bytes() == (folders[0] / "model.safetensors").read_bytes()
    meta = read_metadata(out / "model.safetensors")
    assert meta["step"] == "2"
    # what the model knows: the synthetic benchmark, by folder name and with its generator settings
    synth = json.loads((synth_root / "synth.json").read_text())
    assert json.loads(meta["trained_on"]) == [{"format": "ytvos", "root": synth_root.name, "split": "train",
                                               "weight": 1.0, "synth": synth}]
    assert json.loads(meta["synth"]) == synth
    model = yofo.load(out / "model.safetensors")
    assert model.cfg.fm.dim == 16
    assert model.trained_on.recorded and model.trained_on.synthetic_only
    assert model.trained_on.summary.startswith(f"yofo synthetic benchmark ('{synth_root.name}': yofo synth seed 0, 4 train")
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["stage"], r["epoch"]) for r in rows] == [("1", "1", "1"), ("2", "2", "2")]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[1]["lr"]) == pytest.approx(1e-4)
    assert all(float(r["loss"]) > 0 and float(r["clips_per_s"]) > 0 for r in rows)
    state = torch.load(folders[0] / "train_state.pt", weights_only=True)
    assert state["step"] == 2 and state["stage"] == 2
    before = snapshot(out)
    capsys.readouterr()

    # A fresh run into a folder with a checkpoint.
    assert main(["train", "tiny", *micro, *TWO_STAGES, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a checkpoint" in err and "--resume" in err
    # Resuming with another model config.
    assert main(["train", "tiny", *micro, *TWO_STAGES, "model.fm.dim=8", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different model config" in err and "model.fm.dim" in err
    # Resuming a finished run.
    assert main(["train", "tiny", *micro, *TWO_STAGES, "--out", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # A loss that turns nan in the next step.
    loss = yofo.engine.train.segmentation_loss
    monkeypatch.setattr(yofo.engine.train, "segmentation_loss", lambda *args: loss(*args) * float("nan"))
    assert main(["train", "tiny", *micro, *TWO_STAGES, "train.stage2.epochs=2",
                 "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss is nan at step 3" in err and "ytvos:" in err
    assert str(out / "checkpoints" / "step_00000002") in err
    after = snapshot(out)
    rewritten = ("config.yaml", "environment.json")  # the resumed run's config and start are recorded
    kept = {k: v for k, v in before.items() if k not in rewritten}
    assert {k: v for k, v in after.items() if k not in rewritten} == kept
    assert [s["start_step"] for s in json.loads(after["environment.json"])] == [0, 2]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.seed=5"], "the run was started with train.seed=0, the config has 5 (1 difference(s))"),
        (["train.stage1.lr=0.5", "data.num_frames=3"],
         "started with data.num_frames=2, the config has 3 (2 difference(s))"),
        (["data.datasets=[{format: ytvos, root: SYNTH, split: valid}]"], "data.datasets="),
        (["data.root=OTHER"],  # the same folder name: told apart by the generator settings the checkpoint records
         "seed 0, 4 train videos of 6 frames at 64x64), the config's data is yofo synthetic benchmark ('data': "
         "yofo synth seed 1"),
    ],
)
def test_a_resume_keeps_what_the_run_learns(micro, synth_root, tmp_path, capsys, overrides, message):
    """A resume refuses other training settings or other data in one line and writes nothing; where the data
    is, how fast the run goes and the length of stage 2 may change."""
    out = tmp_path / "run"
    assert main(["train", "tiny", *micro, *TWO_STAGES, "--out", str(out), "--no-progress"]) == 0
    other = tmp_path / "other" / synth_root.name  # the same folder name, other videos
    synthesize(other, train=2, valid=0, seed=1, size=(64, 64), frames=6)
    moved = tmp_path / "moved" / synth_root.name  # the same videos elsewhere
    shutil.copytree(synth_root, moved)
    before = snapshot(out)
    capsys.readouterr()
    overrides = [o.replace("SYNTH", str(synth_root)).replace("OTHER", str(other)) for o in overrides]
    assert main(["train", "tiny", *micro, *TWO_STAGES, *overrides, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "another --out" in err
    assert snapshot(out) == before

    assert main(["train", "tiny", *micro, *TWO_STAGES, f"data.root={moved}", "data.num_workers=1",
                 "train.log_every=5", "train.checkpoint_every=3", "--out", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.root=/nonexistent/synth"], "/nonexistent/synth"),
        (["train.unknown_key=1"], "unknown config key 'train.unknown_key'"),
        (["train.amp=fp8"], "train.amp"),
        (["train.batch_size=0"], "train.batch_size"),
        (["data.pair_expressions=true", "train.batch_size=3"], "must be even with data.pair_expressions"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(micro, tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    assert main(["train", "tiny", *micro, *overrides, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_deep_supervision_trains_the_label_readout(micro, tmp_path, single_thread):
    readouts = {}
    for aux in (0.0, 1.0):
        out = tmp_path / f"aux{aux}"
        args = ["train", "tiny", *micro, "train.iters_per_epoch=1", "train.stage1.epochs=2", "train.stage2.epochs=0",
                f"train.aux_weight={aux}", "data.pair_expressions=true", "--out", str(out), "--no-progress"]
        assert main(args) == 0
        readouts[aux] = yofo.load(out / "model.safetensors").feature_mining.label_readout.weight
    cfg = load_config("tiny", micro)
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model).feature_mining.label_readout.weight
    assert torch.equal(readouts[0.0], initial) and not torch.allclose(readouts[1.0], initial)


def test_motion_aware_fm_trains_on_consecutive_clips_or_with_history_and_notes_other_clips(
    micro, tmp_path, capsys, single_thread
):
    base = ["train", "tiny", *micro, "train.iters_per_epoch=1", "train.stage1.epochs=2", "train.stage2.epochs=0",
            "model.fm.motion.window=3", "--no-progress"]
    assert main([*base, "data.num_frames=3", "data.max_gap=2", "--out", str(tmp_path / "motion")]) == 0
    assert "model.fm.motion.window" not in capsys.readouterr().out  # consecutive 3-frame clips: no note
    model = yofo.load(tmp_path / "motion" / "model.safetensors")
    assert model.cfg.fm.motion.window == 3  # the switch travels in the checkpoint
    for block in model.feature_mining.fuse.values():  # starts at zero, so any value was learnt
        assert block.mm_motion.weight.abs().sum() > 0
    assert main([*base, "--max-steps", "2", "--out", str(tmp_path / "gaps")]) == 0  # micro: 2 frames, gap 4
    out = capsys.readouterr().out
    assert "model.fm.motion.window=3 learns from clips of at least 3 consecutive frames" in out
    assert "data.num_frames=3 data.max_gap=2" in out
    # data.motion_history: each frame brings the 2 frames before it, so the same clips need no note and the
    # motion maps, hence what the motion weights learn, differ
    assert main([*base, "--max-steps", "2", "data.motion_history=true", "--out", str(tmp_path / "history")]) == 0
    assert "learns from clips" not in capsys.readouterr().out
    gaps, history = (yofo.load(tmp_path / name / "model.safetensors").state_dict() for name in ("gaps", "history"))
    motion = [key for key in gaps if "motion" in key]
    assert motion and not all(torch.equal(gaps[key], history[key]) for key in motion)


def test_tensorboard_event_file_holds_the_logged_scalars(micro, tmp_path, single_thread):
    """TensorBoard (a dev extra) gets the scalars of metrics.csv at the same steps; a resumed run continues it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "tiny", *micro, *TWO_STAGES, "--out", str(out), "--no-progress"]) == 0
    assert main(["train", "tiny", *micro, *TWO_STAGES, "train.stage2.epochs=2", "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/clips_per_s", "train/loss", "train/lr"]
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for key in ("loss", "lr", "clips_per_s"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([float(r[key]) for r in rows], rel=1e-6)
