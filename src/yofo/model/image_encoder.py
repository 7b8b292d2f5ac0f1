"""Image encoder: ResNet-18/34/50/101 with torchvision's state-dict key names.

Written here because torchvision is not a dependency; key names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` ...) match torchvision so its pretrained files load unchanged. The stride sits in
the 3×3 conv (torchvision "v1.5"), not in the 1×1 conv of the Caffe2/Mask R-CNN variant LWL used (brief §2.1).
The classifier ``fc`` is not part of the encoder; its keys in a pretrained file are ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from yofo.errors import CheckpointError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: Tensor) -> Tensor:
    """ImageNet normalisation of RGB images in [0, 1]: ``(..., 3, H, W) -> (..., 3, H, W)``."""
    mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std


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

ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNetFeatures(NamedTuple):
    """Outputs of the four ResNet stages: strides 4, 8, 16, 32 (16, 16 or 8, 8 for layer3, layer4 when dilated)."""

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
    """

    def __init__(self, arch: str = "resnet50", width: int = 64, output_stride: int = 32):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        block, layers = ARCHS[arch]
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
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return ResNetFeatures(l1, l2, l3, self.layer4(l3))

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load torchvision-format weights from a ``.pth``/``.pt`` or ``.safetensors`` file.

        A ``.pth`` is read with ``torch.load(weights_only=True)``; a dict wrapping the weights under
        ``state_dict`` or ``model`` is unwrapped. ``fc.*`` (the classifier) is ignored. Missing and
        unexpected keys are logged and returned; a shape mismatch raises.

        Returns:
            ``(missing, unexpected)`` key lists.
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
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict of tensors")
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))}
        own = self.state_dict()
        for key, value in state.items():
            if key in own and own[key].shape != value.shape:
                raise CheckpointError(
                    f"{path}: '{key}' has shape {tuple(value.shape)}, the encoder expects {tuple(own[key].shape)} "
                    "(check model.image_encoder.arch and width)"
                )
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing:
            log.warning("%s: %d keys missing, e.g. %s", path, len(missing), missing[:3])
        if unexpected:
            log.warning("%s: %d unexpected keys ignored, e.g. %s", path, len(unexpected), unexpected[:3])
        return list(missing), list(unexpected)
