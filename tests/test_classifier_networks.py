"""Classification networks of seed 003 (issue #12): CXRDenseNet121 and DualBranchDenseNet121.

Inputs are at most 128 px; 512 px shapes and parameter counts are checked on ``torch.device("meta")``.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
from monai.networks.nets import DenseNet121
from monai.visualize import CAM, GradCAM
from monai.visualize.class_activation_maps import default_normalizer
from torch import nn

from cxr_monai.networks import CXRDenseNet121, DualBranchDenseNet121
from cxr_monai.networks.cxr_densenet import (
    adapt_input_kernel,
    densenet_input_size_limit,
    load_densenet_pretrained,
    normalize_cam,
    to_monai_densenet_key,
)

LOGGER = "cxr_monai.networks.cxr_densenet"


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def randomise_batch_norms(net: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from their initial values, so copies are detectable."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.running_mean, module.weight, module.bias):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.2 - 0.1 + (tensor is module.weight))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


# ----------------------------------------------------------------------------------------------------------
# single branch: shapes, stem, parameter counts


@pytest.mark.parametrize("in_channels", [1, 2, 3])
def test_output_shapes_small_inputs(in_channels):
    torch.manual_seed(0)
    net = CXRDenseNet121(in_channels=in_channels, num_classes=13).eval()
    assert net(torch.rand(2, in_channels, 128, 128)).shape == (2, 13)
    plain = CXRDenseNet121(in_channels=in_channels, num_classes=13, downsample_input=False).eval()
    assert isinstance(plain.downsample, nn.Identity) and plain.features.conv0.in_channels == in_channels
    assert plain(torch.rand(2, in_channels, 64, 64)).shape == (2, 13)
    # 64 px with the extra stem leaves less than one pixel for dense block 4 (1/128 of the input)
    with pytest.raises(ValueError, match="at least 113 px"):
        net(torch.rand(1, in_channels, 64, 64))


def test_input_size_limit_is_exact():
    assert densenet_input_size_limit(True, 4) == 113 and densenet_input_size_limit(False, 4) == 29
    net = CXRDenseNet121().eval()
    assert net(torch.rand(1, 1, 113, 113)).shape == (1, 13)
    with pytest.raises(ValueError, match="at least 113 px"):
        net(torch.rand(1, 1, 112, 113))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.rand(1, 128, 128))


@pytest.mark.parametrize("in_channels", [1, 2, 3])
def test_stem_halves_twice_at_512_px(in_channels):
    seen: dict[str, torch.Size] = {}
    with torch.device("meta"):
        net = CXRDenseNet121(in_channels=in_channels, num_classes=13)
        net.downsample.conv.register_forward_hook(lambda m, i, o: seen.update(stem_conv=o.shape))
        net.features.conv0.register_forward_hook(lambda m, i, o: seen.update(conv0_in=i[0].shape))
        net.class_layers.relu.register_forward_hook(lambda m, i, o: seen.update(last=o.shape))
        logits = net(torch.empty(2, in_channels, 512, 512))
    assert logits.shape == (2, 13)
    assert seen["stem_conv"] == (2, 3, 256, 256)
    assert seen["conv0_in"] == (2, 3, 128, 128)  # 512 -> 128 before DenseNet's own stem
    assert seen["last"] == (2, 1024, 4, 4)  # the map that CAM draws at 512 px
    assert net.downsample.conv.stride == (2, 2) and net.downsample.pool.stride == 2
    assert net.features.conv0.in_channels == 3  # stem_channels: the ImageNet conv0 layout whatever in_channels is


def test_parameter_counts_at_512_px():
    with torch.device("meta"):
        monai_densenet = DenseNet121(spatial_dims=2, in_channels=3, out_channels=13)
        grey, three = CXRDenseNet121(in_channels=1), CXRDenseNet121(in_channels=3)
        dual_grey, dual_three = DualBranchDenseNet121(in_channels=1), DualBranchDenseNet121(in_channels=3)
        assert dual_three(torch.empty(1, 3, 512, 512), torch.empty(1, 1, 512, 512)).shape == (1, 13)
    assert count_parameters(monai_densenet) == 6_967_181
    # the extra stem: a 3 x in_channels x 3 x 3 kernel and a 3-channel batch norm (6 parameters)
    assert count_parameters(grey) == 6_967_181 + 27 + 6 == 6_967_214
    assert count_parameters(three) == 6_967_181 + 81 + 6 == 6_967_268
    assert count_parameters(dual_grey) == 11_760_975
    assert count_parameters(dual_three) == 11_761_029
    # two branches (stems, dense blocks 1-3, norm3), a 2048 -> 512 fusion convolution, one block 4 and head
    branch = count_parameters(dual_grey.frontal)
    shared = count_parameters(dual_grey.features) + count_parameters(dual_grey.class_layers)
    assert count_parameters(dual_grey) == 2 * branch + 2048 * 512 + shared
    assert branch + 1024 * 512 + shared == count_parameters(grey)


def test_outputs_are_logits_and_train_step_works():
    torch.manual_seed(0)
    net = CXRDenseNet121(in_channels=3, num_classes=13)
    logits = net(torch.rand(2, 3, 128, 128))
    assert (logits < 0).any()  # no sigmoid in the head: BCEWithLogitsLoss / Activations(sigmoid=True) apply it
    nn.BCEWithLogitsLoss()(logits, torch.randint(0, 2, (2, 13)).float()).backward()
    assert net.downsample.conv.weight.grad is not None and net.class_layers.out.weight.grad is not None


# ----------------------------------------------------------------------------------------------------------
# CAM and Grad-CAM (monai.visualize)


def test_monai_cam_and_gradcam_run_at_the_input_size():
    torch.manual_seed(0)
    net = CXRDenseNet121(in_channels=2, num_classes=13).eval()
    x = torch.rand(2, 2, 128, 128)
    cam = CAM(nn_module=net, target_layers=net.cam_target_layer, fc_layers=net.cam_fc_layer)
    # MONAI 1.6: CAM takes one class index per sample, GradCAM one int for the batch
    assert cam(x, class_idx=[3, 3]).shape == (2, 1, 128, 128)
    with pytest.raises(TypeError, match="not iterable"):
        cam(x, class_idx=3)
    grad_cam = GradCAM(nn_module=net, target_layers=net.cam_target_layer)
    assert grad_cam(x, class_idx=3).shape == (2, 1, 128, 128)
    # at 128 px the last map is 1x1; at 512 px 4x4 (test above)
    assert cam.feature_map_size((1, 2, 128, 128)) == (1, 1, 1, 1)


def test_cam_is_the_logit_decomposition_and_the_default_normaliser_inverts():
    torch.manual_seed(0)
    net = CXRDenseNet121(in_channels=1, num_classes=13, downsample_input=False).eval()  # 4x4 map at 128 px
    randomise_batch_norms(net)
    x = torch.rand(2, 1, 128, 128)
    class_idx = 5
    raw_cam = CAM(net, target_layers=net.cam_target_layer, fc_layers=net.cam_fc_layer, postprocessing=lambda m: m)
    per_position = raw_cam.compute_map(x, class_idx=[class_idx, class_idx])
    assert per_position.shape == (2, 1, 4, 4)
    with torch.no_grad():
        logits = net(x)
    # average pool + linear head: the mean of the map over positions is the class logit (a fair CAM)
    torch.testing.assert_close(per_position.mean(dim=(2, 3)).squeeze(1), logits[:, class_idx])

    raw = raw_cam(x, class_idx=[class_idx, class_idx])
    default_cam = CAM(net, target_layers=net.cam_target_layer, fc_layers=net.cam_fc_layer)
    default = default_cam(x, class_idx=[class_idx, class_idx])
    assert not torch.equal(raw.amax(dim=(1, 2, 3)), raw.amin(dim=(1, 2, 3)))
    for sample in range(2):
        r, d = raw[sample].flatten(), default[sample].flatten()
        # MONAI's default_normalizer = ScaleIntensity(minv=1, maxv=0): the most class-relevant pixel becomes 0
        assert r.argmax() == d.argmin() and r.argmin() == d.argmax()
        torch.testing.assert_close(d, (r.max() - r) / (r.max() - r.min()))
    torch.testing.assert_close(normalize_cam(raw), 1 - default)  # normalize_cam: same scaling, not inverted
    assert normalize_cam(raw).flatten(1).argmax(1).tolist() == raw.flatten(1).argmax(1).tolist()


def test_normalisers_on_constant_maps():
    constant = torch.full((1, 1, 4, 4), 5.0)
    # MONAI's default returns a constant map unchanged (rescale_array multiplies it by minv=1), outside [0, 1]
    assert torch.equal(default_normalizer(constant), constant)
    assert torch.equal(normalize_cam(constant), torch.zeros_like(constant))
    batch = torch.stack([torch.arange(4.0).reshape(1, 2, 2), torch.full((1, 2, 2), -3.0)])
    expected = torch.tensor([[[[0.0, 1 / 3], [2 / 3, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(normalize_cam(batch), expected)


# ----------------------------------------------------------------------------------------------------------
# dual branch


@pytest.fixture(scope="module")
def dual() -> DualBranchDenseNet121:
    torch.manual_seed(0)
    net = DualBranchDenseNet121(in_channels=3, lateral_channels=1, num_classes=13)
    randomise_batch_norms(net, seed=1)
    return net.eval()


def test_dual_branch_layout(dual):
    assert list(dual.frontal.features._modules)[-3:] == ["denseblock3", "norm3", "relu3"]
    assert list(dual.features._modules) == ["denseblock4", "norm5"]
    assert dual.fusion.conv.in_channels == 2 * 1024 and dual.fusion.conv.out_channels == 512
    assert dual.frontal.downsample.conv.in_channels == 3 and dual.lateral.downsample.conv.in_channels == 1
    assert dual.frontal.features.conv0 is not dual.lateral.features.conv0
    assert dual.branch_cam_layers == {"frontal": "frontal.features.relu3", "lateral": "lateral.features.relu3"}


def test_dual_branch_shapes_with_and_without_lateral(dual):
    frontal, lateral = torch.rand(2, 3, 128, 128), torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        both, alone = dual(frontal, lateral), dual(frontal)
    assert both.shape == alone.shape == (2, 13)
    assert not torch.allclose(both, alone)  # the lateral matters when present
    with torch.device("meta"):
        meta = DualBranchDenseNet121(in_channels=2)
        seen = {}
        meta.frontal.register_forward_hook(lambda m, i, o: seen.update(branch=o.shape))
        assert meta(torch.empty(1, 2, 512, 512), torch.empty(1, 1, 512, 512)).shape == (1, 13)
    assert seen["branch"] == (1, 1024, 8, 8)  # dense block 3 of each view at 512 px
    with pytest.raises(ValueError, match="same height and width"):
        dual(frontal, torch.rand(2, 1, 256, 256))
    with pytest.raises(ValueError, match="one flag per study"):
        dual(frontal, lateral, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="batches differ"):
        dual(frontal, lateral[:1])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_absent_lateral_does_not_change_the_output(mode):
    torch.manual_seed(0)
    net = DualBranchDenseNet121(in_channels=1, num_classes=13)
    randomise_batch_norms(net, seed=2)
    net.train(mode == "train")
    frontal = torch.rand(3, 1, 128, 128)
    present = torch.tensor([1.0, 0.0, 1.0])  # numbers work as flags; (B,) or (B, 1)
    lateral = torch.rand(3, 1, 128, 128)
    variants = [lateral.clone() for _ in range(3)]
    variants[1][1] = 0.0
    variants[2][1] = float("nan")  # whatever the absent view holds
    with torch.no_grad():
        outputs = [net(frontal, v, present) for v in variants]
        outputs.append(net(frontal, variants[0], present.reshape(3, 1).bool()))
    for output in outputs[1:]:
        assert torch.equal(output, outputs[0])
    assert torch.isfinite(outputs[0]).all()
    with torch.no_grad():
        none_present = net(frontal, lateral, torch.zeros(3))
        no_lateral = net(frontal)
        all_present = net(frontal, lateral, torch.ones(3, dtype=torch.bool))
        implicit = net(frontal, lateral)
    assert torch.equal(none_present, no_lateral)
    assert torch.equal(all_present, implicit)
    if mode == "eval":  # samples are independent: an absent study scores as it does frontal-only
        torch.testing.assert_close(outputs[0][1], no_lateral[1])
        torch.testing.assert_close(outputs[0][0], all_present[0])


def test_gradients_reach_both_branches_only_when_a_lateral_is_present():
    torch.manual_seed(0)
    net = DualBranchDenseNet121(in_channels=1, num_classes=13).train()
    frontal, lateral = torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128)
    net(frontal, lateral, torch.tensor([True, False])).sum().backward()
    for branch in (net.frontal, net.lateral):
        grads = [p.grad for p in branch.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert branch.downsample.conv.weight.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    net(frontal, lateral, torch.tensor([False, False])).sum().backward()
    assert all(p.grad is None for p in net.lateral.parameters())  # the lateral branch did not run
    assert net.frontal.downsample.conv.weight.grad.abs().sum() > 0


def test_branch_cams_match_monai_gradcam(dual):
    torch.manual_seed(5)
    frontal, lateral = torch.rand(2, 3, 128, 128), torch.rand(2, 1, 128, 128)
    maps = dual.branch_cams(frontal, lateral, class_idx=4, postprocessing=None)
    for view in ("frontal", "lateral"):  # 2x2 maps at 128 px, upsampled: not flat, so the comparison means something
        assert (maps[view].flatten(1).std(dim=1) > 0).all()
    assert maps["frontal"].shape == (2, 1, 128, 128) and maps["lateral"].shape == (2, 1, 128, 128)
    assert maps["logits"].shape == (2, 13) and not dual.training
    net = DualBranchDenseNet121(in_channels=3, lateral_channels=1, num_classes=13)
    net.load_state_dict(dual.state_dict())  # a copy: GradCAM leaves hooks on the module it wraps
    for view, layer in dual.branch_cam_layers.items():
        monai_map = GradCAM(net, target_layers=layer, postprocessing=lambda m: m)(frontal, class_idx=4, lateral=lateral)
        torch.testing.assert_close(maps[view], monai_map)
    normalised = dual.branch_cams(frontal, lateral, class_idx=4)
    for view in ("frontal", "lateral"):
        torch.testing.assert_close(normalised[view], normalize_cam(maps[view]))
        assert normalised[view].min() >= 0 and normalised[view].max() <= 1


def test_branch_cams_absent_lateral_and_no_lateral(dual):
    frontal, lateral = torch.rand(2, 3, 128, 128), torch.rand(2, 1, 128, 128)
    dual.train()
    maps = dual.branch_cams(frontal, lateral, torch.tensor([True, False]), class_idx=0, postprocessing=None)
    assert dual.training  # the mode is restored
    dual.eval()
    assert torch.equal(maps["lateral"][1], torch.zeros(1, 128, 128))
    alone = dual.branch_cams(frontal, class_idx=0, postprocessing=None)
    assert alone["lateral"] is None
    torch.testing.assert_close(alone["frontal"][1], maps["frontal"][1])
    with pytest.raises(ValueError, match="out of range"):
        dual.branch_cams(frontal, class_idx=13)


def test_monai_cam_runs_on_the_dual_branch_fused_map(dual):
    frontal, lateral = torch.rand(1, 3, 128, 128), torch.rand(1, 1, 128, 128)
    cam = CAM(dual, target_layers=dual.cam_target_layer, fc_layers=dual.cam_fc_layer, postprocessing=normalize_cam)
    assert cam(frontal, class_idx=[1], lateral=lateral).shape == (1, 1, 128, 128)


# ----------------------------------------------------------------------------------------------------------
# pretrained weights from a user's file


def torchvision_key(key: str, legacy: bool) -> str:
    """MONAI DenseNet key -> torchvision's (``norm.1`` in the published file when ``legacy``, else ``norm1``)."""
    match = re.match(r"^(.*\.denselayer\d+)\.layers\.(norm|relu|conv)([12])\.(.+)$", key)
    if match:
        return f"{match.group(1)}.{match.group(2)}{'.' if legacy else ''}{match.group(3)}.{match.group(4)}"
    if key.startswith("class_layers.out."):
        return "classifier." + key.rsplit(".", 1)[1]
    return key


@pytest.fixture(scope="module")
def imagenet_like() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000)
    randomise_batch_norms(net, seed=3)
    return net.state_dict()


def test_single_branch_into_another_class_count(tmp_path, caplog):
    torch.manual_seed(0)
    binary = CXRDenseNet121(in_channels=3, num_classes=1)  # the normal/abnormal pre-training model
    randomise_batch_norms(binary)
    torch.save(binary.state_dict(), tmp_path / "binary.pt")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        net = CXRDenseNet121(in_channels=3, num_classes=13, pretrained_path=tmp_path / "binary.pt")
    assert "class_layers.out.weight 13x1024 <- class_layers.out.weight 1x1024" in caplog.text
    assert "shapes differ" in caplog.text and "Not used from" in caplog.text
    source, loaded = binary.state_dict(), net.state_dict()
    head = {"class_layers.out.weight", "class_layers.out.bias"}
    assert all(torch.equal(loaded[key], source[key]) for key in source if key not in head)
    assert loaded["class_layers.out.weight"].shape == (13, 1024)
    summary = load_densenet_pretrained(net, tmp_path / "binary.pt")
    assert summary["unmatched_target"] == [] and summary["adapted"] == []
    assert sorted(summary["unmatched_source"]) == sorted(head)
    with pytest.raises(ValueError, match="shapes differ"):
        load_densenet_pretrained(net, tmp_path / "binary.pt", strict_shapes=True)
    # a grey binary model initialises the 3-channel model: the 3x3 stem kernel is adapted, the rest copied
    grey = CXRDenseNet121(in_channels=1, num_classes=1)
    torch.save({"network": grey.state_dict()}, tmp_path / "checkpoint.pt")  # a CheckpointSaver file
    summary = load_densenet_pretrained(net, tmp_path / "checkpoint.pt")
    assert summary["adapted"] == ["downsample.conv.weight"]
    torch.testing.assert_close(net.downsample.conv.weight, grey.downsample.conv.weight.repeat(1, 3, 1, 1) / 3)


@pytest.mark.parametrize("legacy", [True, False])
def test_torchvision_layout_into_the_plain_and_the_downsampling_model(tmp_path, imagenet_like, legacy, caplog):
    state = {torchvision_key(k, legacy): v for k, v in imagenet_like.items()}
    if legacy:  # the published densenet121-a639ec97.pth has no batch counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1." + ("norm.1.weight" if legacy else "norm1.weight") in state
    assert all(to_monai_densenet_key(torchvision_key(k, legacy)) == k for k in imagenet_like)
    torch.save(state, tmp_path / "densenet121.pth")

    plain = CXRDenseNet121(in_channels=1, num_classes=13, downsample_input=False)
    summary = load_densenet_pretrained(plain, tmp_path / "densenet121.pth")
    assert summary["adapted"] == ["features.conv0.weight"]
    rgb = imagenet_like["features.conv0.weight"]
    torch.testing.assert_close(plain.features.conv0.weight, rgb.sum(dim=1, keepdim=True))  # summed over R, G, B
    loaded = plain.state_dict()
    for key, value in imagenet_like.items():
        if key.startswith("features.") and key != "features.conv0.weight" and key in summary["loaded"]:
            assert torch.equal(loaded[key], value)
    assert len(summary["loaded"]) == len([k for k in state if not k.startswith("classifier.")])
    assert sorted(summary["unmatched_source"]) == ["classifier.bias", "classifier.weight"]

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        net = CXRDenseNet121(in_channels=2, num_classes=13, pretrained_path=tmp_path / "densenet121.pth")
    assert torch.equal(net.features.conv0.weight, rgb)  # stem_channels=3: ImageNet's conv0 loads unchanged
    assert torch.equal(net.features.denseblock4.denselayer16.layers.conv2.weight,
                       imagenet_like["features.denseblock4.denselayer16.layers.conv2.weight"])
    assert "left at their initialisation" in caplog.text and "downsample.conv.weight" in caplog.text


def test_single_branch_initialises_the_dual_branch(tmp_path):
    torch.manual_seed(0)
    single = CXRDenseNet121(in_channels=1, num_classes=13)
    randomise_batch_norms(single, seed=4)
    torch.save(single.state_dict(), tmp_path / "single.pt")
    net = DualBranchDenseNet121(in_channels=1, lateral_channels=1, num_classes=13, pretrained_path=tmp_path / "single.pt")
    summary = load_densenet_pretrained(net, tmp_path / "single.pt")
    assert summary["unmatched_target"] == [] and summary["shape_mismatched"] == [] and summary["unmatched_source"] == []
    assert torch.equal(net.lateral.features.denseblock2.denselayer3.layers.conv1.weight,
                       single.features.denseblock2.denselayer3.layers.conv1.weight)
    assert torch.equal(net.lateral.features.norm3.running_var, single.features.transition3.norm.running_var)
    assert torch.equal(net.fusion.conv.weight[:, :1024], single.features.transition3.conv.weight)
    assert not net.fusion.conv.weight[:, 1024:].any()
    frontal, lateral = torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128)
    net.eval(), single.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(frontal, lateral), single(frontal))  # starts as the frontal-only model
    # a dual-branch state dict loads into a dual-branch model as it is
    torch.save(net.state_dict(), tmp_path / "dual.pt")
    again = DualBranchDenseNet121(in_channels=1, num_classes=13)
    assert len(load_densenet_pretrained(again, tmp_path / "dual.pt")["loaded"]) == len(net.state_dict())


def test_pretrained_files_are_read_weights_only(tmp_path):
    net = CXRDenseNet121()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_densenet_pretrained(net, tmp_path / "missing.pt")
    torch.save({"weights": nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module: refused
    with pytest.raises(ValueError, match="weights_only=True"):
        load_densenet_pretrained(net, tmp_path / "module.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_densenet_pretrained(net, tmp_path / "tensor.pt")


def test_adapt_input_kernel():
    kernel = torch.rand(4, 3, 7, 7)
    assert torch.equal(adapt_input_kernel(kernel, 3), kernel)
    grey = adapt_input_kernel(kernel, 1)
    torch.testing.assert_close(grey, kernel.sum(1, keepdim=True))
    image = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(  # k copies of an image give the response of the RGB kernel on the grey RGB image
        nn.functional.conv2d(image.repeat(1, 2, 1, 1), adapt_input_kernel(kernel, 2)),
        nn.functional.conv2d(image.repeat(1, 3, 1, 1), kernel),
    )


# ----------------------------------------------------------------------------------------------------------
# TorchScript (monai.bundle ckpt_export scripts the network)


def test_torchscript_single_and_dual(tmp_path):
    torch.manual_seed(0)
    net = CXRDenseNet121(in_channels=3, num_classes=13).eval()
    scripted = torch.jit.script(net)
    scripted.save(str(tmp_path / "model.ts"))
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    # the same code with fewer dense layers: scripting compiles every layer of the graph (seconds each hundred)
    dual_net = DualBranchDenseNet121(in_channels=2, num_classes=13, block_config=(2, 2, 2, 2)).eval()
    dual_scripted = torch.jit.script(dual_net)
    frontal, lateral, present = torch.rand(2, 2, 128, 128), torch.rand(2, 1, 128, 128), torch.tensor([True, False])
    with torch.no_grad():
        torch.testing.assert_close(dual_scripted(frontal, lateral, present), dual_net(frontal, lateral, present))
        torch.testing.assert_close(dual_scripted(frontal), dual_net(frontal))
