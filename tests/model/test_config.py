"""Config loading: files, overrides, validation."""

import pytest
from omegaconf import OmegaConf

from yofo.config import load_config, run_config_differences
from yofo.errors import ConfigError


def test_named_configs_load_and_overrides_apply():
    paper = load_config("paper")
    assert paper.model.image_encoder.arch == "resnet50" and list(paper.model.input_size) == [480, 864]
    tiny = load_config("tiny", ["model.memory.size=1", "model.fm.mode=baseline"])
    assert tiny.model.memory.size == 1 and tiny.model.fm.mode == "baseline"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'model.fm.fusoin'") as err:
        load_config("tiny", ["model.fm.fusoin=concat"])
    assert "model.fm.fusion" in str(err.value)


def test_unknown_key_in_a_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  decoder:\n    widht: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*model.decoder.widht.*model.decoder.width"):
        load_config(path)


@pytest.mark.parametrize("override,message", [
    ("model.fm.mode=triple", "model.fm.mode"),
    ("model.text_encoder.pooling=max", "model.text_encoder.pooling.*cls, mean"),
    ("model.input_size=[100,160]", "multiples of 32"),
    ("model.memory.size=0", "model.memory.size"),
    ("model.fm.strides=[2,3,1]", "model.fm.strides"),
    ("model.text_encoder.layers=[-1,0,-1]", "model.text_encoder.layers"),
    ("model.text_encoder.layers=[-1,-1]", "model.text_encoder.layers"),
    ("model.image_encoder.output_stride=4", "model.image_encoder.output_stride.*32, 16, 8"),
    ("model.memory.size=three", "model.memory.size"),
    ("model.memory.size", "key=value"),
])
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_missing_config():
    with pytest.raises(ConfigError, match="one of .*paper"):
        load_config("nonexistent")
    with pytest.raises(ConfigError, match="not found"):
        load_config("nonexistent.yaml")


def test_lite_config_is_the_paper_model_on_efficientnet_lite():
    lite, paper = load_config("lite"), load_config("paper")
    enc = lite.model.image_encoder
    assert (enc.arch, enc.weights, lite.model.text_encoder.pooling) == ("efficientnet_lite0", "imagenet", "mean")
    for key in ("fm.mode", "fm.fusion", "fm.strides", "meta_transfer.enabled", "memory.size"):  # Table 3 switches
        assert OmegaConf.select(lite.model, key) == OmegaConf.select(paper.model, key), key
    assert lite.train == paper.train


@pytest.mark.parametrize("override,message", [
    ("model.image_encoder.mean=[0.5,0.5,0.5]", "set both or neither"),
    ("model.image_encoder.mean=[0.5,0.5]", "three values"),
])
def test_bad_normalisation(override, message):
    overrides = [override] + (["model.image_encoder.std=[1,1]"] if "three" in message else [])
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_list_item_list_value_and_nested_overrides(tmp_path):
    """The README's paper command sets list items; list values and keys of a YAML given by path work too."""
    cfg = load_config("paper", ["data.datasets.0.root=/data/ref-youtube-vos", "data.datasets.2.weight=2.5",
                                "data.datasets.1.annotators=[2]", "model.input_size=[96,160]",
                                "model.fm.strides=[2,2,2]", "train.stage1.group_lr.phi=0.3"])
    assert cfg.data.datasets[0].root == "/data/ref-youtube-vos" and cfg.data.datasets[0].format == "ytvos"
    assert cfg.data.datasets[1].format == "davis" and list(cfg.data.datasets[1].annotators) == [2]
    assert cfg.data.datasets[2].weight == 2.5 and cfg.data.datasets[2].format == "refcoco"
    assert list(cfg.model.input_size) == [96, 160] and list(cfg.model.fm.strides) == [2, 2, 2]
    assert cfg.train.stage1.group_lr.phi == 0.3 and cfg.train.stage1.group_lr.decoder == 0.5
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  datasets:\n    - {format: davis, root: /d, split: train}\n")
    mine = load_config(path, ["data.datasets.0.split=val", "data.datasets=[{format: davis, root: /e}]"])
    assert [(d.format, d.root, d.split) for d in mine.data.datasets] == [("davis", "/e", "train")]
    assert load_config(path, ["data.datasets.0.split=val"]).data.datasets[0].split == "val"


@pytest.mark.parametrize("override,message", [
    ("data.datasets.3.root=/x", r"'data.datasets.3': data.datasets is a list of 3 item\(s\); expected an index 0..2"),
    ("data.datasets.x.root=/x", "'data.datasets.x'.*index 0..2"),
    ("data.datasets.0.rot=/x", "unknown config key 'data.datasets.0.rot'; valid keys: .*data.datasets.0.root"),
    ("data.datasets.1.weight=heavy", "data.datasets.1.weight=heavy: .*Float"),
    ("model.input_size=96", "model.input_size=96: .*list"),
    ("model.input_size.2=96", "'model.input_size.2'.*index 0..1"),
    ("model.memory.size.x=1", "'model.memory.size.x': model.memory.size is a value"),
])
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("paper", [override])
    assert "\n" not in str(err.value)


def test_run_config_differences_compare_what_a_run_learns():
    """A resume may move the data or change speed settings, not the schedule or the data settings; a key only one
    config has (another yofo version's config.yaml) is not compared."""
    started = load_config("demo", ["data.datasets=[{format: ytvos, root: /a/synth}]"])
    same = load_config("demo", ["data.datasets=[{format: ytvos, root: /b/synth}]", "data.root=/b/synth",
                                "data.num_workers=2", "train.num_threads=2", "train.log_every=1",
                                "train.stage2.epochs=9", "device=cuda"])
    assert run_config_differences(started, same) == []
    changed = load_config("demo", ["data.datasets=[{format: ytvos, root: /a/synth, split: valid}]",
                                   "train.seed=7", "train.stage1.epochs=1", "data.augment.hflip_p=0.5"])
    assert run_config_differences(started, changed) == ["data.augment.hflip_p", "data.datasets", "train.seed",
                                                        "train.stage1.epochs"]
    older = OmegaConf.to_container(started)
    del older["train"]["seed"]
    assert run_config_differences(OmegaConf.create(older), changed) == ["data.augment.hflip_p", "data.datasets",
                                                                        "train.stage1.epochs"]
