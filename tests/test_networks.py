from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_monai.networks import ContextDiscriminator, ContextEncoder, dcgan_init

SMALL = {"base_channels": 16, "bottleneck_channels": 256}


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def layers_of(module: nn.Module, kind: type) -> list[nn.Module]:
    return [layer for layer in module.modules() if isinstance(layer, kind)]


def test_paper_generator_layers_shapes_and_size():
    with torch.device("meta"):  # 357 M parameters: shapes and counts without allocating 1.4 GB
        net = ContextEncoder()
        patches = torch.empty(2, 1, 128, 128)
        latent, centre = net.encode(patches), net(patches)
    assert latent.shape == (2, 4096, 1, 1)
    assert centre.shape == (2, 1, 64, 64)
    convs = layers_of(net.encoder, nn.Conv2d)
    assert [conv.out_channels for conv in convs] == [128, 256, 512, 1024, 2048, 4096]
    assert [conv.stride for conv in convs] == [(2, 2)] * 5 + [(1, 1)]
    assert all(conv.kernel_size == (4, 4) for conv in convs)
    deconvs = layers_of(net.decoder, nn.ConvTranspose2d)
    assert [deconv.out_channels for deconv in deconvs] == [2048, 1024, 512, 256, 1]
    assert count_parameters(net) == 357_069_953


def test_pathak_bottleneck_and_channel_cap():
    with torch.device("meta"):
        net = ContextEncoder(bottleneck_channels=4000, max_channels=512)
        assert net.encode(torch.empty(2, 1, 128, 128)).shape == (2, 4000, 1, 1)
    assert max(conv.out_channels for conv in layers_of(net.encoder, nn.Conv2d)[:-1]) == 512
    assert max(deconv.out_channels for deconv in layers_of(net.decoder, nn.ConvTranspose2d)) == 512


def test_small_generator_forward_backward():
    torch.manual_seed(0)
    net = ContextEncoder(**SMALL)
    assert count_parameters(net) == 3_484_817
    masked = torch.rand(2, 1, 128, 128) * 2 - 1
    centre = net(masked)
    assert centre.shape == (2, 1, 64, 64)
    assert centre.abs().max() <= 1.0  # tanh
    centre.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert any(p.grad.abs().sum() > 0 for p in net.encoder.parameters())


def test_generator_norm_layout_follows_dcgan():
    net = ContextEncoder(**SMALL)
    first, last = net.encoder[0], net.decoder[-1]
    assert not layers_of(first, nn.BatchNorm2d) and not layers_of(last, nn.BatchNorm2d)
    assert len(layers_of(net, nn.BatchNorm2d)) == len(net.encoder) + len(net.decoder) - 2
    assert isinstance(layers_of(last, nn.Tanh)[0], nn.Tanh)


def test_generator_eval_accepts_single_sample():
    net = ContextEncoder(**SMALL).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 64, 64)


def test_generator_other_sizes():
    # the §4.1 whole-image setting is the same network (128 px in, 64 px centre out); other sizes follow
    tiny = {"base_channels": 4, "bottleneck_channels": 32}
    net = ContextEncoder(image_size=256, out_size=128, **tiny)
    assert net(torch.zeros(2, 1, 256, 256)).shape == (2, 1, 128, 128)
    net = ContextEncoder(in_channels=3, image_size=64, out_size=32, **tiny)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("arguments", [{"image_size": 100}, {"out_size": 4}, {"image_size": 0}, {"base_channels": 0}])
def test_generator_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError):
        ContextEncoder(**{**SMALL, **arguments})


def test_generator_rejects_wrong_input_shape():
    net = ContextEncoder(**SMALL)
    with pytest.raises(ValueError, match=r"\(B, 1, 128, 128\)"):
        net(torch.zeros(2, 1, 64, 64))


def test_paper_discriminator_layers_and_size():
    with torch.device("meta"):
        net = ContextDiscriminator()
        assert net(torch.empty(3, 1, 64, 64)).shape == (3, 1)
        original = ContextDiscriminator(base_channels=64)
    convs = layers_of(net, nn.Conv2d)
    assert [conv.out_channels for conv in convs] == [128, 256, 512, 1024, 1]
    assert [conv.stride for conv in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert count_parameters(net) == 11_032_193
    # Pathak's netlocalD (2 763 520 parameters) plus the biases of the two layers without batch norm
    assert count_parameters(original) == 2_763_520 + 64 + 1


def test_small_discriminator_forward_backward():
    net = ContextDiscriminator(base_channels=16)
    logits = net(torch.rand(4, 1, 64, 64) * 2 - 1)
    assert logits.shape == (4, 1)
    probabilities = torch.sigmoid(logits)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="ContextDiscriminator"):
        net(torch.zeros(4, 1, 128, 128))


def test_dcgan_initialisation_statistics():
    torch.manual_seed(0)
    net = ContextEncoder(**SMALL)
    bottleneck = layers_of(net.encoder[-1], nn.Conv2d)[0].weight  # 1 M weights
    assert abs(bottleneck.mean().item()) < 1e-3
    assert bottleneck.std().item() == pytest.approx(0.02, rel=0.02)
    norm_weights = torch.cat([bn.weight for bn in layers_of(net, nn.BatchNorm2d)])
    assert norm_weights.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert norm_weights.std().item() == pytest.approx(0.02, rel=0.15)
    assert all((bn.bias == 0).all() for bn in layers_of(net, nn.BatchNorm2d))
    convs = layers_of(net, nn.Conv2d) + layers_of(net, nn.ConvTranspose2d)
    assert all((conv.bias == 0).all() for conv in convs if conv.bias is not None)


def test_dcgan_init_resets_a_default_initialised_layer():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 4)
    conv.apply(dcgan_init)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (conv.bias == 0).all()


# ----------------------------------------------------------------------------------------------------------
# bone-suppression GAN (seed 003 §3.2): self-attention U-Net generator, multi-scale spectral-norm discriminator


def _largest_singular_value(module: torch.nn.Module) -> float:
    weight = module.weight  # the parametrisation's W / σ(W)
    if isinstance(module, torch.nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    return float(torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2))


def test_spectral_norm_keeps_every_layer_at_unit_largest_singular_value():
    from cxr_monai.networks import MultiScaleDiscriminator, SelfAttentionUNet

    generator = SelfAttentionUNet(channels=(8, 16, 32, 32), image_size=64, attention_sizes=(8,), spectral_norm=True)
    discriminator = MultiScaleDiscriminator(in_channels=2, channels=8, num_layers=2, num_scales=2)
    for _ in range(3):  # a power iteration per training forward
        generator(torch.randn(2, 1, 64, 64))
        discriminator(torch.randn(2, 2, 64, 64))
    for network in (generator, discriminator):
        layers = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
        assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
        sigmas = [_largest_singular_value(m) for m in layers]
        assert max(abs(s - 1.0) for s in sigmas) < 0.05, sigmas


def test_self_attention_starts_as_the_identity_and_its_gamma_trains():
    from cxr_monai.networks import SelfAttention2d

    torch.manual_seed(0)
    block = SelfAttention2d(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x) and float(block.gamma) == 0.0
    optimizer = torch.optim.Adam(block.parameters(), lr=1e-2)
    target = x + torch.randn_like(x)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(block(x), target).backward()
        optimizer.step()
    assert float(block.gamma) != 0.0
    assert not torch.equal(block(x), x)
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention2d(12, num_heads=5)


def test_self_attention_unet_places_attention_at_32_px_and_refuses_sizes_it_cannot_build():
    from cxr_monai.networks import SelfAttention2d, SelfAttentionUNet

    with torch.device("meta"):
        paper = SelfAttentionUNet()  # 512 px, seven levels: 256 ... 4 px
    attended = [name for name, module in paper.named_modules() if isinstance(module, SelfAttention2d)]
    assert attended == ["down_attention.3", "up_attention.2"]  # the 32 px encoder and decoder features
    small = SelfAttentionUNet(channels=(8, 16, 32), image_size=64, attention_sizes=(16, 8))
    assert small(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    assert small(torch.rand(1, 1, 128, 128)).shape == (1, 1, 128, 128)  # fully convolutional
    scripted = torch.jit.script(small.eval())  # what ckpt_export does (without spectral norm)
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(scripted(x), small(x))
    with pytest.raises(ValueError, match="feature width"):
        SelfAttentionUNet(channels=(8, 16, 32), image_size=64, attention_sizes=(64,))
    with pytest.raises(ValueError, match="multiple of"):
        SelfAttentionUNet(channels=(8, 16, 32, 32, 32, 32), image_size=64)


def test_multiscale_discriminator_gives_one_logit_map_per_scale():
    from cxr_monai.networks import MultiScaleDiscriminator

    d = MultiScaleDiscriminator(in_channels=2, channels=8, num_layers=2, num_scales=3)
    logits = d(torch.rand(2, 2, 64, 64))
    assert [tuple(x.shape) for x in logits] == [(2, 1, 14, 14), (2, 1, 6, 6), (2, 1, 2, 2)]
    with pytest.raises(ValueError, match="num_scales"):
        MultiScaleDiscriminator(num_scales=0)
