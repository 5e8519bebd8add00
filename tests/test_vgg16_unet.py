from __future__ import annotations

import ast
import inspect
import logging
from typing import ClassVar

import pytest
import torch
from torch import nn

import cxr_monai.networks.vgg16_unet as vgg16_unet_module
from cxr_monai.networks.vgg16_unet import VGG16UNet, load_vgg16_pretrained

TINY = {"width": 0.125}  # encoder widths 8, 16, 32, 64, 64
TORCHVISION_CONV_IDS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_FEATURES_PARAMETERS = 14_714_688  # torchvision vgg16().features


def conv_parameters(convs: list[nn.Conv2d]) -> int:
    return sum(conv.weight.numel() + conv.bias.numel() for conv in convs)


def vgg16_state(width: float = 1.0, batch_norm: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-named ``vgg16``/``vgg16_bn`` state dict with random values (torchvision is not installed).

    ``width`` scales the channel counts so the loading tests can use a tiny network; the classifier has the
    real key names but small shapes (its 100 M values are never used).
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    channels, index, layer = 3, 0, 0
    for convs in (2, 2, 3, 3, 3):
        for _ in range(convs):
            out = max(round(VGG16_WIDTHS[layer] * width), 1)
            layer += 1
            state[f"features.{index}.weight"] = torch.randn(out, channels, 3, 3, generator=generator)
            state[f"features.{index}.bias"] = torch.randn(out, generator=generator)
            if batch_norm:
                state[f"features.{index + 1}.weight"] = torch.rand(out, generator=generator) + 0.5
                state[f"features.{index + 1}.bias"] = torch.randn(out, generator=generator)
                state[f"features.{index + 1}.running_mean"] = torch.randn(out, generator=generator)
                state[f"features.{index + 1}.running_var"] = torch.rand(out, generator=generator) + 0.5
                state[f"features.{index + 1}.num_batches_tracked"] = torch.tensor(1234)
            index += 3 if batch_norm else 2
            channels = out
        index += 1  # max-pool
    for layer, (rows, cols) in zip((0, 3, 6), ((16, 32), (16, 16), (10, 16))):
        state[f"classifier.{layer}.weight"] = torch.randn(rows, cols, generator=generator)
        state[f"classifier.{layer}.bias"] = torch.randn(rows, generator=generator)
    return state


def conv_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [key for key in state if key.startswith("features.") and state[key].dim() == 4]


@pytest.mark.parametrize(
    "in_channels, out_channels, size, upsample",
    [(1, 1, (64, 64), "deconv"), (3, 2, (32, 96), "deconv"), (2, 4, (96, 64), "nontrainable"),
     (1, 3, (64, 32), "pixelshuffle")],
)
def test_output_has_input_resolution(in_channels, out_channels, size, upsample):
    net = VGG16UNet(in_channels=in_channels, out_channels=out_channels, upsample=upsample, **TINY)
    out = net(torch.rand(2, in_channels, *size))
    assert out.shape == (2, out_channels, *size)


def test_layout_and_skips():
    net = VGG16UNet(norm=None, **TINY)
    convs = net.encoder_convs()
    assert [conv.out_channels for conv in convs] == [max(round(c / 8), 1) for c in VGG16_WIDTHS]
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is not None for conv in convs)
    assert [len(block) for block in net.encoder] == [2, 2, 3, 3, 3]
    assert net.encoder_norms() == [None] * 13
    assert all(isinstance(norm, nn.BatchNorm2d) for norm in VGG16UNet(**TINY).encoder_norms())
    # decoder mirrors the encoder: 64 (centre), 64, 64, 32, 16, 8 channels at width 1/8
    assert [up.convs[-1].conv.out_channels for up in net.decoder] == [64, 64, 32, 16, 8]
    assert net.head.out_channels == 1 and net.head.kernel_size == (1, 1)
    custom = VGG16UNet(decoder_channels=(16, 16, 16, 8, 8, 4), **TINY)
    assert custom(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    assert [up.convs[-1].conv.out_channels for up in custom.decoder] == [16, 16, 8, 8, 4]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = VGG16UNet(dropout=0.1, **TINY)
    out = net(torch.rand(2, 1, 64, 64))
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.encoder_convs()[0].weight.grad.abs().sum() > 0


def test_bad_inputs_and_arguments_raise():
    net = VGG16UNet(**TINY)
    with pytest.raises(ValueError, match="60x64"):
        net(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 1, 64, 48))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="spatial_dims"):
        VGG16UNet(spatial_dims=3)
    with pytest.raises(ValueError, match="decoder_channels"):
        VGG16UNet(decoder_channels=(8, 8), **TINY)
    with pytest.raises(ValueError, match="width"):
        VGG16UNet(width=0)


def test_module_does_not_use_monai_apps():
    # `import monai` itself loads monai.apps.deepgrow; what matters is that this network does not depend on it
    tree = ast.parse(inspect.getsource(vgg16_unet_module))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name and name.startswith("monai.apps")]


def test_full_width_parameter_count_and_torchvision_key_mapping(tmp_path):
    with torch.device("meta"):
        rgb = VGG16UNet(in_channels=3, norm=None)
        grey_bn = VGG16UNet(in_channels=1)
    assert conv_parameters(rgb.encoder_convs()) == VGG16_FEATURES_PARAMETERS
    assert sum(p.numel() for p in rgb.encoder.parameters()) == VGG16_FEATURES_PARAMETERS
    assert conv_parameters(grey_bn.encoder_convs()) == VGG16_FEATURES_PARAMETERS - 2 * 64 * 9
    assert [conv.out_channels for conv in rgb.encoder_convs()] == list(VGG16_WIDTHS)
    assert sum(p.numel() for p in rgb.parameters()) == 35_293_889
    assert sum(p.numel() for p in grey_bn.parameters()) == 35_309_121
    with torch.device("meta"):
        quarter = VGG16UNet(width=0.25)
    assert sum(p.numel() for p in quarter.parameters()) == 2_211_729

    state = vgg16_state()  # real torchvision shapes
    assert conv_keys(state) == [f"features.{i}.weight" for i in TORCHVISION_CONV_IDS]
    assert sum(state[key].numel() + state[key[:-6] + "bias"].numel() for key in conv_keys(state)) == 14_714_688
    torch.save(state, tmp_path / "vgg16.pth")
    net = VGG16UNet(in_channels=3, norm=None, pretrained_path=tmp_path / "vgg16.pth")
    for index, conv in zip(TORCHVISION_CONV_IDS, net.encoder_convs()):
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])


@pytest.fixture
def tiny_vgg16(tmp_path):
    state = vgg16_state(width=0.125)
    path = tmp_path / "vgg16_tiny.pth"
    torch.save(state, path)
    return state, path


def test_pretrained_rgb_copied_exactly(tiny_vgg16, caplog):
    state, path = tiny_vgg16
    net = VGG16UNet(in_channels=3, norm=None, **TINY)
    with caplog.at_level(logging.INFO, logger="cxr_monai.networks.vgg16_unet"):
        summary = load_vgg16_pretrained(net, path)
    for index, conv in zip(TORCHVISION_CONV_IDS, net.encoder_convs()):
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert len(summary["loaded"]) == 26
    assert summary["loaded"][:2] == ["encoder.0.0.conv.weight", "encoder.0.0.conv.bias"]
    assert summary["unmatched_source"] == [f"classifier.{i}.{f}" for i in (0, 3, 6) for f in ("weight", "bias")]
    assert summary["unmatched_target"] == [] and summary["shape_mismatched"] == []
    assert summary["path"] == str(path)
    assert "classifier.0.weight" in caplog.text and "Loaded 26" in caplog.text


@pytest.mark.parametrize("in_channels", [1, 2])
def test_pretrained_first_kernel_adapted_to_grey(tiny_vgg16, in_channels):
    state, path = tiny_vgg16
    net = VGG16UNet(in_channels=in_channels, norm=None, **TINY)
    summary = load_vgg16_pretrained(net, path)
    rgb = state["features.0.weight"]
    first = net.encoder_convs()[0].weight
    assert first.shape[1] == in_channels
    expected = rgb.sum(dim=1, keepdim=True) / in_channels
    assert torch.allclose(first, expected.repeat(1, in_channels, 1, 1))
    if in_channels == 1:
        assert torch.allclose(first[:, 0], rgb.sum(dim=1))
    grey = torch.rand(1, 1, 5, 5)  # a grey image in every channel gives the RGB kernel's response
    assert torch.allclose(
        nn.functional.conv2d(grey.repeat(1, in_channels, 1, 1), first),
        nn.functional.conv2d(grey.repeat(1, 3, 1, 1), rgb),
        atol=1e-5,
    )
    assert torch.equal(net.encoder_convs()[1].weight, state["features.2.weight"])
    assert len(summary["loaded"]) == 26


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module."])
def test_pretrained_wrapped_state_dicts(tmp_path, wrapper):
    state = vgg16_state(width=0.125)
    if wrapper == "module.":
        content: dict = {f"module.{key}": value for key, value in state.items()}
    else:
        content = {wrapper: state, "epoch": 3}
    torch.save(content, tmp_path / "wrapped.pt")
    net = VGG16UNet(in_channels=3, norm=None, **TINY)
    assert len(load_vgg16_pretrained(net, tmp_path / "wrapped.pt")["loaded"]) == 26
    assert torch.equal(net.encoder_convs()[-1].weight, state["features.28.weight"])


def test_pretrained_batch_norm_variants(tmp_path, tiny_vgg16, caplog):
    state_bn = vgg16_state(width=0.125, batch_norm=True)
    assert conv_keys(state_bn)[:3] == ["features.0.weight", "features.3.weight", "features.7.weight"]
    torch.save(state_bn, tmp_path / "vgg16_bn.pth")
    net = VGG16UNet(in_channels=3, norm="batch", **TINY)
    summary = load_vgg16_pretrained(net, tmp_path / "vgg16_bn.pth")
    norms = net.encoder_norms()
    assert torch.equal(net.encoder_convs()[1].weight, state_bn["features.3.weight"])
    assert torch.equal(norms[0].running_var, state_bn["features.1.running_var"])
    assert torch.equal(norms[12].weight, state_bn["features.41.weight"])
    assert int(norms[12].num_batches_tracked) == 1234
    assert len(summary["loaded"]) == 13 * 7 and summary["unmatched_target"] == []

    # vgg16_bn into a network without batch norm: convolutions only, the batch norms are reported unused
    plain = load_vgg16_pretrained(VGG16UNet(in_channels=3, norm=None, **TINY), tmp_path / "vgg16_bn.pth")
    assert len(plain["loaded"]) == 26 and "features.1.running_mean" in plain["unmatched_source"]

    # plain vgg16 into a batch-norm network: the batch norms stay at their initialisation, with a warning
    _, path = tiny_vgg16
    with caplog.at_level(logging.WARNING, logger="cxr_monai.networks.vgg16_unet"):
        partial = load_vgg16_pretrained(VGG16UNet(in_channels=3, **TINY), path)
    assert len(partial["loaded"]) == 26
    assert "encoder.0.0.adn.N.running_mean" in partial["unmatched_target"]
    assert "left at their initialisation" in caplog.text


def test_pretrained_width_mismatch_skipped_or_strict(tiny_vgg16, caplog):
    _, path = tiny_vgg16  # made for width 1/8
    net = VGG16UNet(in_channels=3, norm=None, width=0.25)
    before = {key: value.clone() for key, value in net.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="cxr_monai.networks.vgg16_unet"):
        summary = load_vgg16_pretrained(net, path)
    assert summary["loaded"] == [] and len(summary["shape_mismatched"]) == 26
    assert summary["shape_mismatched"][0] == "encoder.0.0.conv.weight 16x3x3x3 <- features.0.weight 8x3x3x3"
    assert "shapes differ" in caplog.text
    with pytest.raises(ValueError, match="shapes differ"):
        load_vgg16_pretrained(net, path, strict_shapes=True)
    assert all(torch.equal(before[key], value) for key, value in net.state_dict().items())


class _Payload:
    calls: ClassVar[list[str]] = []

    def __reduce__(self):
        return (_Payload.calls.append, ("unpickled",))


def test_pretrained_bad_files_raise_naming_the_file(tmp_path):
    net = VGG16UNet(in_channels=3, norm=None, **TINY)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_vgg16_pretrained(net, tmp_path / "missing.pth")

    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth.*no VGG16 convolution keys"):
        load_vgg16_pretrained(net, tmp_path / "other.pth")

    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match=r"tensor\.pth.*not a state dict"):
        load_vgg16_pretrained(net, tmp_path / "tensor.pth")

    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth"):
        load_vgg16_pretrained(net, tmp_path / "text.pth")

    shallow = {k: v for k, v in vgg16_state(width=0.125).items() if k not in ("features.28.weight", "features.28.bias")}
    torch.save(shallow, tmp_path / "vgg13ish.pth")
    with pytest.raises(ValueError, match=r"vgg13ish\.pth.* 12 convolutions"):
        load_vgg16_pretrained(net, tmp_path / "vgg13ish.pth")


def test_pretrained_loading_is_weights_only(tmp_path):
    state = vgg16_state(width=0.125)
    state["extra"] = _Payload()  # an arbitrary object: torch.load(weights_only=False) would call list.append
    torch.save(state, tmp_path / "pickled.pth")
    _Payload.calls.clear()
    with pytest.raises(ValueError, match=r"pickled\.pth.*weights_only=True"):
        VGG16UNet(in_channels=3, norm=None, pretrained_path=str(tmp_path / "pickled.pth"), **TINY)
    assert _Payload.calls == []


@pytest.mark.parametrize("pretrained_path", [None, ""])
def test_no_pretrained_path_is_random_init(pretrained_path):
    torch.manual_seed(0)
    a = VGG16UNet(pretrained_path=pretrained_path, **TINY)
    torch.manual_seed(0)
    b = VGG16UNet(**TINY)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_torchscript():
    torch.manual_seed(0)
    net = VGG16UNet(**TINY).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
    with pytest.raises(Exception, match="60x64"):
        scripted(torch.rand(1, 1, 60, 64))
