"""The decoder's eval-mode output stage computes the same function as the literal order used in training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yofo.model.decoder import Decoder, bicubic_up2, upsampled_conv


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_upsampled_conv_equals_conv_after_bicubic(kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 1, kernel, padding=kernel // 2)
    x = torch.randn(2, 6, 7, 10)
    for size in [(14, 20), (16, 23)]:  # ×2, and a size that is no integer multiple
        expected = conv(F.interpolate(x, size=size, mode="bicubic", align_corners=False))
        torch.testing.assert_close(upsampled_conv(x, conv, size), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 7, 10), (1, 2, 1, 1), (1, 1, 2, 5), (1, 4, 24, 40)])
def test_bicubic_up2_equals_interpolate(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(bicubic_up2(x), expected, atol=1e-5, rtol=1e-5)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(bicubic_up2(cl), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width", [8, 32])  # m/2 = 4 <= 9 = k²: literal order; 16 > 9: upsampled_conv
def test_decoder_gives_the_same_logits_in_eval_and_training_order(width):
    torch.manual_seed(0)
    decoder = Decoder(encoding_channels=4, feature_channels=(8, 8, 16, 16), width=width)
    torch.nn.init.normal_(decoder.out_conv.weight)  # zero at initialisation, which would hide a wrong order
    features = [torch.randn(1, c, 64 // s, 96 // s) for c, s in zip((8, 8, 16, 16), (4, 8, 16, 32))]
    encoding = torch.randn(3, 4, 4, 6)
    with torch.no_grad():
        decoder.train(False)
        fast = decoder(decoder.image_part(features), encoding, (64, 96))
        decoder.train(True)
        for module in decoder.modules():  # the literal order, with the same (running) BatchNorm statistics
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        literal = decoder(decoder.image_part(features), encoding, (64, 96))
    assert fast.shape == (3, 1, 64, 96)
    torch.testing.assert_close(fast, literal, atol=1e-4, rtol=1e-4)
