"""Checkpoints: round trip, small files without the text transformer, clear errors."""

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

import yofo
from yofo.config import load_config
from yofo.engine.checkpoint import read_metadata, save_model
from yofo.errors import CheckpointError
from yofo.model.yofo import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_config("tiny", ["model.memory.size=2"]).model)


def test_round_trip_rebuilds_the_model_from_metadata(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(model, path, {"step": "12"})
    assert read_metadata(path)["step"] == "12"
    loaded = yofo.load(path)
    assert loaded.cfg.memory.size == 2 and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_text_transformer_is_left_out_when_not_stored(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("text_encoder.bert.") for k in keys)
    assert "text_encoder.proj.0.weight" in keys
    assert path.stat().st_size < 10e6


def test_not_a_yofo_checkpoint(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        yofo.load(tmp_path / "x.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a yofo checkpoint"):
        yofo.load(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        yofo.load(tmp_path / "missing.safetensors")


def test_tensors_that_do_not_match_the_config(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    from safetensors.torch import load_file

    state = load_file(str(path))
    meta = read_metadata(path)
    state["decoder.out_conv.weight"] = torch.zeros(1, 1, 1, 1)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="decoder.out_conv.weight"):
        yofo.load(path)
    del state["decoder.out_conv.weight"]
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="1 missing"):
        yofo.load(path)


def test_equal_weights_give_equal_bytes_across_processes(tmp_path):
    """safetensors orders its header by a hash map; save_model sorts it, so sha256 sums are reproducible."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from yofo.config import load_config\n"
        "from yofo.model.yofo import build_model\n"
        "from yofo.engine.checkpoint import save_model\n"
        "torch.manual_seed(0)\n"
        "save_model(build_model(load_config('tiny').model), sys.argv[1], {'step': '1', 'b': 'x', 'a': 'y'})\n"
    )
    paths = [tmp_path / f"{i}.safetensors" for i in range(2)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert read_metadata(paths[0])["a"] == "y"


LITE_SMALL = ["model.input_size=[64,96]", "model.text_encoder.store_weights=false"]


def test_lite_checkpoint_keeps_the_encoders_normalisation(tmp_path):
    """A Lite model normalises as its ImageNet weights expect, after yofo.load too: same logits on raw frames."""
    torch.manual_seed(0)
    model = build_model(load_config("lite", LITE_SMALL).model).eval()
    assert model.image_encoder.mean == pytest.approx((127 / 255,) * 3)
    assert model.image_encoder.std == pytest.approx((128 / 255,) * 3)
    path = tmp_path / "lite.safetensors"
    save_model(model, path)
    loaded = yofo.load(path)
    assert list(loaded.cfg.image_encoder.mean) == pytest.approx([127 / 255] * 3)
    assert loaded.image_encoder.mean == pytest.approx(model.image_encoder.mean)
    frames = torch.rand(1, 2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(loaded.normalize(frames), ["the camel"]), model(model.normalize(frames), ["the camel"]))


def test_normalisation_travels_and_old_checkpoints_are_imagenet():
    from yofo.config import model_config_from_dict
    from yofo.model.image_encoder import IMAGENET_MEAN, IMAGENET_STD

    old = OmegaConf.to_container(load_config("tiny").model)
    del old["image_encoder"]["mean"], old["image_encoder"]["std"]  # written before encoders owned it
    cfg = model_config_from_dict(old)
    assert (tuple(cfg.image_encoder.mean), tuple(cfg.image_encoder.std)) == (IMAGENET_MEAN, IMAGENET_STD)
    custom = load_config("tiny", ["model.image_encoder.mean=[0.5,0.5,0.5]", "model.image_encoder.std=[0.25,0.25,0.25]"])
    model = build_model(custom.model)
    assert model.normalize(torch.full((3, 1, 1), 0.75)).flatten().tolist() == [1.0, 1.0, 1.0]


def test_checkpoints_of_the_first_motion_design_load_without_motion_and_are_refused_with_it():
    """``fm.motion.channels`` (the first motion-aware FM design) is dropped when motion was off, refused when on."""
    from yofo.config import model_config_from_dict
    from yofo.errors import ConfigError

    old = OmegaConf.to_container(load_config("tiny").model)
    old["fm"]["motion"] = {"window": 0, "channels": 16}
    assert model_config_from_dict(old).fm.motion.window == 0
    old["fm"]["motion"]["window"] = 4
    with pytest.raises(ConfigError, match="fm.motion.channels: trained with the first motion-aware FM design"):
        model_config_from_dict(old)
