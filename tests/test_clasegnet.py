"""ClaSegNet (issue #13, seed 004): shapes, modes, TorchScript, the noisy-or image logit, pre-trained ResNet-50."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from cxr_monai.losses import noisy_or_logit
from cxr_monai.networks import ClaSegNet, load_resnet50_pretrained
from cxr_monai.networks.clasegnet import RESNET50_LAYERS, to_clasegnet_key

LOGGER = "cxr_monai.networks.clasegnet"
TINY = {"layers": (1, 1, 1, 1), "width": 0.125, "decoder_channels": (16, 8, 8, 8, 8)}  # stages 32 ... 256 channels
TINY_BASELINE = {"layers": (1, 1, 1, 1), "width": 0.125}


def torchvision_resnet50_shapes(width: float = 1.0, layers=RESNET50_LAYERS) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's ``resnet50().state_dict()``, written out from its layout.

    torchvision is not installed; this follows ``torchvision.models.resnet.Bottleneck`` (stride on the 3x3
    ``conv2``, ``downsample`` = 1x1 conv without bias + batch norm) and ``ResNet`` (``conv1`` 7x7 on RGB,
    ``bn1``, ``layer1`` ... ``layer4``, ``fc`` 2048 -> 1000). ``width`` scales the channels as MONAI's
    ``widen_factor`` does, for tiny test networks.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    stem = int(64 * width)
    shapes["conv1.weight"] = (stem, 3, 7, 7)
    bn("bn1", stem)
    channels = stem
    for stage, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        planes = int(planes * width)
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, channels, 1, 1)
            bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{prefix}.bn2", planes)
            shapes[f"{prefix}.conv3.weight"] = (4 * planes, planes, 1, 1)
            bn(f"{prefix}.bn3", 4 * planes)
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (4 * planes, channels, 1, 1)
                bn(f"{prefix}.downsample.1", 4 * planes)
            channels = 4 * planes
    shapes["fc.weight"] = (1000, channels)
    shapes["fc.bias"] = (1000,)
    return shapes


def fake_torchvision_state(width: float, layers, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in torchvision_resnet50_shapes(width, layers).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


def test_output_shapes_of_both_modes():
    net = ClaSegNet(**TINY).eval()
    baseline = ClaSegNet(mode="baseline", **TINY_BASELINE).eval()
    for height, width in ((64, 64), (96, 128)):
        x = torch.rand(2, 1, height, width)
        out = net(x)
        assert set(out) == {"image", "regions", "segmentation"}
        assert out["image"].shape == (2, 1)
        assert out["regions"].shape == (2, 1, height // 32, width // 32)
        assert out["segmentation"].shape == (2, 1, height, width)
        out = baseline(x)
        assert set(out) == {"image"} and out["image"].shape == (2, 1)


def test_full_resnet50_layout_and_sizes():
    net = ClaSegNet()
    assert net.backbone.out_channels == (64, 256, 512, 1024, 2048) and net.feature_channels == 2048
    assert net.head.regions.in_channels == 2048 and net.head.regions.kernel_size == (1, 1)
    backbone = sum(p.numel() for p in net.backbone.parameters())
    # torchvision resnet50: 25,557,032 parameters, less fc (2,049,000) and two of conv1's three input channels
    assert backbone == 25_557_032 - 2_049_000 - 2 * 64 * 7 * 7 == 23_501_760
    baseline = ClaSegNet(mode="baseline")
    assert sum(p.numel() for p in baseline.parameters()) == backbone + 2049
    assert sum(p.numel() for p in net.head.parameters()) < 0.4 * backbone  # a light decoder
    out = net.eval()(torch.rand(1, 1, 64, 64))  # the full network at a small size: a 2x2 region grid
    assert out["regions"].shape == (1, 1, 2, 2) and out["segmentation"].shape == (1, 1, 64, 64)
    # every backbone tensor has torchvision's name (under backbone.) and shape, RGB conv1 aside
    expected = {to_clasegnet_key(key): shape for key, shape in torchvision_resnet50_shapes().items()}
    expected["backbone.conv1.weight"] = (64, 1, 7, 7)
    got = {key: tuple(value.shape) for key, value in net.state_dict().items() if key.startswith("backbone.")}
    assert got == {key: shape for key, shape in expected.items() if key.startswith("backbone.")}


def test_flexible_unet_resnet50_names_map_onto_clasegnet():
    from monai.networks.nets import FlexibleUNet

    flexible = FlexibleUNet(1, 1, "resnet50", spatial_dims=2).state_dict()
    ours = {key: tuple(value.shape) for key, value in ClaSegNet().state_dict().items()}
    mapped = {to_clasegnet_key(key): tuple(value.shape) for key, value in flexible.items()}
    assert set(ours) - set(mapped) == {"head.regions.weight", "head.regions.bias"}  # all but the region head
    assert all(ours[key] == shape for key, shape in mapped.items())


@pytest.mark.parametrize("mode", ["clasegnet", "baseline"])
def test_torchscript_of_both_modes(mode, tmp_path):
    torch.manual_seed(0)
    net = ClaSegNet(mode=mode, **(TINY if mode == "clasegnet" else TINY_BASELINE)).eval()
    torch.jit.script(net).save(str(tmp_path / "model.ts"))  # what the bundle's ckpt_export does
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(2, 1, 64, 96)
    with torch.jit.optimized_execution(False):  # no profiling runs: the same graph, seconds less on a CPU
        expected, got = net(x), loaded(x)
        assert set(got) == set(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name])
        with pytest.raises(Exception, match="divisible by 32"):
            loaded(torch.rand(1, 1, 48, 64))


def test_image_logit_is_the_noisy_or_of_the_regions():
    torch.manual_seed(0)
    net = ClaSegNet(**TINY).eval()
    with torch.no_grad():
        net.head.regions.bias.fill_(-2.0)
        out = net(torch.rand(3, 1, 128, 96))
    p = torch.sigmoid(out["regions"].double()).flatten(1)
    direct = 1 - torch.prod(1 - p, dim=1, keepdim=True)
    torch.testing.assert_close(torch.sigmoid(out["image"].double()), direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["image"], noisy_or_logit(out["regions"]))


def test_extreme_region_logits_give_finite_outputs_and_gradients():
    torch.manual_seed(0)
    net = ClaSegNet(**TINY)
    x = torch.rand(2, 1, 64, 64)  # a 2x2 grid
    for bias in (-1e4, 1e4):  # moderate ones (-120, +50) are in test_mil_loss.py
        with torch.no_grad():
            net.head.regions.weight.mul_(1e-3)
            net.head.regions.bias.fill_(bias)
        net.zero_grad()
        out = net(x)
        assert all(torch.isfinite(value).all() for value in out.values()), bias
        if bias < 0:  # P ~ 4 sigmoid(bias): the image logit ~ bias + log 4, not -inf
            assert out["image"].detach().flatten().tolist() == pytest.approx([bias + math.log(4)] * 2, abs=0.1)
        else:  # 1 - P ~ sigmoid(-bias) ** 4: the logit ~ 4 bias, not saturated at float's 1
            assert out["image"].detach().flatten().tolist() == pytest.approx([4 * bias] * 2, rel=1e-2)
        out["image"].sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None), bias
        assert net.head.regions.bias.grad.abs().item() > 0, bias


def test_inputs_are_checked():
    net = ClaSegNet(**TINY)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 1, 64, 80))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="mode"):
        ClaSegNet(mode="resnet")
    with pytest.raises(ValueError, match="layers"):
        ClaSegNet(layers=(3, 4, 6))
    with pytest.raises(ValueError, match="decoder_channels"):
        ClaSegNet(decoder_channels=(16, 8))


@pytest.mark.parametrize("mode", ["clasegnet", "baseline"])
def test_pretrained_torchvision_weights(mode, tmp_path, caplog):
    state = fake_torchvision_state(0.125, (1, 1, 1, 1))
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    kwargs = TINY if mode == "clasegnet" else TINY_BASELINE
    with caplog.at_level(logging.INFO, logger=LOGGER):
        net = ClaSegNet(mode=mode, pretrained_path=path, **kwargs)
    assert "left at their initialisation" in caplog.text and "Not used from" in caplog.text  # heads; fc
    loaded = net.state_dict()
    for key, value in state.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        assert torch.equal(loaded[f"backbone.{key}"], value), key
    # the RGB kernel summed over its colours: a grey image gives the response of the RGB kernel to grey RGB
    torch.testing.assert_close(loaded["backbone.conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    summary = load_resnet50_pretrained(net, path)
    assert summary["adapted"] == ["backbone.conv1.weight"]
    assert summary["unmatched_source"] == ["fc.weight", "fc.bias"]
    assert summary["unmatched_target"] and all(key.startswith("head.") for key in summary["unmatched_target"])
    assert not summary["shape_mismatched"]
    assert len(summary["loaded"]) == len(state) - 2


def test_pretrained_wrappers_prefixes_and_own_checkpoints(tmp_path):
    state = fake_torchvision_state(0.125, (1, 1, 1, 1))
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}}, tmp_path / "wrapped.pt")
    net = ClaSegNet(pretrained_path=tmp_path / "wrapped.pt", **TINY)
    assert torch.equal(net.state_dict()["backbone.layer4.0.conv3.weight"], state["layer4.0.conv3.weight"])
    # a baseline checkpoint (CheckpointSaver layout) initialises a ClaSegNet's backbone, its head is not used
    baseline = ClaSegNet(mode="baseline", **TINY_BASELINE)
    torch.save({"network": baseline.state_dict()}, tmp_path / "checkpoint.pt")
    summary = load_resnet50_pretrained(net, tmp_path / "checkpoint.pt")
    assert summary["unmatched_source"] == ["head.fc.weight", "head.fc.bias"] and not summary["adapted"]
    for key, value in baseline.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(net.state_dict()[key], value), key


def test_pretrained_errors(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClaSegNet(pretrained_path=tmp_path / "missing.pth", **TINY)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        load_resnet50_pretrained(ClaSegNet(**TINY), tmp_path / "garbage.pth")
    torch.save(fake_torchvision_state(0.25, (1, 1, 1, 1)), tmp_path / "wider.pth")  # width 0.25 into 0.125
    net = ClaSegNet(**TINY)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        summary = load_resnet50_pretrained(net, tmp_path / "wider.pth")
    assert summary["shape_mismatched"] and "shapes differ" in caplog.text
    with pytest.raises(ValueError, match="shapes differ"):
        load_resnet50_pretrained(net, tmp_path / "wider.pth", strict_shapes=True)
