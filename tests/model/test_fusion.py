"""Feature mining's fusion block: the eval-mode order of ACM computes the same function as the literal one."""

import torch

from yofo.model.fusion import FusionBlock


def test_cheaper_acm_order_equals_the_literal_attention_and_merge():
    torch.manual_seed(0)
    block = FusionBlock(in_channels=12, dim=16, key_dim=8, pool_sizes=(1, 3, 6, 8)).eval()
    for module in block.modules():  # non-trivial BatchNorm statistics and biases
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
        elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            module.bias.data.normal_()
    image = block.image_part(torch.randn(1, 12, 10, 14))  # one frame shared by three expressions
    z = torch.randn(3, 16)
    with torch.no_grad():
        fast = block(image, z)
        text = block.mm_text(torch.nn.functional.normalize(z, dim=1))[..., None, None]
        multimodal = torch.nn.functional.normalize(torch.relu(block.mm_norm(image["mm_image"] + text)), dim=1)
        ctx_v, ctx_l = block.aca(image["aca"], multimodal)
        literal = block.merge(torch.cat([ctx_v, ctx_l], dim=1)) + multimodal
    assert fast.shape == (3, 16, 10, 14)
    torch.testing.assert_close(fast, literal, atol=1e-5, rtol=1e-5)


def test_text_film_starts_as_the_paper_block_and_then_scales_the_image_side_per_channel():
    torch.manual_seed(0)
    plain = FusionBlock(in_channels=12, dim=16, key_dim=8, pool_sizes=(1, 3), fusion="concat").eval()
    film = FusionBlock(in_channels=12, dim=16, key_dim=8, pool_sizes=(1, 3), fusion="concat", text_film=True)
    film.load_state_dict(plain.state_dict(), strict=False)
    film.eval()
    image = plain.image_part(torch.randn(1, 12, 6, 10))
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(film(image, z), plain(image, z), atol=0, rtol=0)  # zero-initialised scale
        film.mm_film.weight.normal_()
        film.mm_film.bias.normal_()
        unit = torch.nn.functional.normalize(z, dim=1)
        scale = (1 + film.mm_film(unit))[..., None, None]
        mm = image["mm_image"] * scale + film.mm_text(unit)[..., None, None]
        expected = torch.nn.functional.normalize(torch.relu(film.mm_norm(mm)), dim=1)
        torch.testing.assert_close(film(image, z), expected)
        assert not torch.allclose(film(image, z), plain(image, z))


def test_text_film_gets_a_gradient_at_its_zero_initialisation():
    torch.manual_seed(0)
    block = FusionBlock(in_channels=12, dim=16, key_dim=8, pool_sizes=(1, 3), text_film=True).train()
    out = block(block.image_part(torch.randn(1, 12, 6, 10)), torch.randn(2, 16))
    (out * torch.randn_like(out)).sum().backward()
    assert block.mm_film.weight.grad.abs().sum() > 0 and block.mm_film.bias.grad.abs().sum() > 0
