"""``yofo info``: a checkpoint's size, sha256, training data and model config, as text and JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from yofo.cli import main
from yofo.config import flatten_config, load_config
from yofo.data.synthetic import synthesize
from yofo.engine.checkpoint import save_model, training_metadata

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "yofo-synthetic.safetensors"


def test_info_of_a_trained_model_names_its_data(random_model, tmp_path, capsys):
    synth = tmp_path / "bench"
    synthesize(synth, train=1, valid=1, seed=3, size=(64, 96), frames=6)
    data = load_config("tiny", ["data.datasets=[{format: ytvos, root: /data/ref-youtube-vos, weight: 6},"
                                "{format: refcoco, root: /data/refer, dataset: refcocog, weight: 3}]"]).data
    for name, cfg, expected in [
        ("synth", load_config("tiny", [f"data.root={synth}"]).data,
         "yofo synthetic benchmark ('bench': yofo synth seed 3, 1 train videos of 6 frames at 64x96)"),
        ("real", data, "ytvos 'ref-youtube-vos' split train (weight 6); refcoco refcocog 'refer' split train (weight 3)"),
    ]:
        path = tmp_path / f"{name}.safetensors"
        save_model(random_model().eval(), path, {"step": "7", **training_metadata(cfg)})
        assert main(["info", str(path)]) == 0
        text = capsys.readouterr().out
        assert f"trained on   {expected}\n" in text
        assert ("knows only" in text or "coloured shapes" in text) == (name == "synth")
        assert f"sha256       {hashlib.sha256(path.read_bytes()).hexdigest()}\n" in text
        assert f"({path.stat().st_size:,} bytes)" in text and "step         7\n" in text
        assert "  fm.dim: 32\n" in text and "  input_size: [96, 160]\n" in text

        assert main(["info", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert info["size_bytes"] == path.stat().st_size and info["step"] == 7
        assert info["trained_on"]["recorded"] and info["trained_on"]["summary"] == expected
        assert info["trained_on"]["synthetic_only"] is (name == "synth")
        assert flatten_config(info["config"]) == flatten_config(load_config("tiny").model)


def test_info_of_the_shipped_checkpoint_says_what_it_knows(capsys):
    assert main(["info", str(SHIPPED), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trained_on"]["synthetic_only"] is True
    # documented in checkpoints/README.md
    assert info["sha256"] in (SHIPPED.parent / "README.md").read_text()
    assert info["config"]["input_size"] == [96, 160]


def test_info_of_a_model_without_recorded_data(random_model, tmp_path, capsys):
    path = tmp_path / "old.safetensors"
    save_model(random_model().eval(), path)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trained_on"] == {"recorded": False, "synthetic_only": None, "datasets": [],
                                  "summary": "not recorded (the checkpoint was saved before yofo recorded it)"}
    assert info["step"] is None


def test_an_unrecorded_checkpoint_of_the_scratch_demo_recipe_is_inferred_synthetic(random_model, tmp_path, capsys):
    """Checkpoints of configs/demo-scratch.yaml saved before yofo recorded data (the earlier shipped file)."""
    for config, synthetic in [("demo-scratch", True), ("demo", None)]:
        path = tmp_path / f"{config}.safetensors"
        save_model(random_model(config).eval(), path)
        assert main(["info", str(path), "--json"]) == 0
        trained_on = json.loads(capsys.readouterr().out)["trained_on"]
        assert not trained_on["recorded"] and trained_on["synthetic_only"] is synthetic
        assert ("inferred" in trained_on["summary"] and "demo-scratch.yaml" in trained_on["summary"]) is bool(synthetic)


def test_info_bad_file_is_one_line(tmp_path, capsys):
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    for path, message in [(tmp_path / "missing.safetensors", "not found"), (tmp_path / "x.safetensors", "not a safetensors")]:
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
