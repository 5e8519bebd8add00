"""CAM and Grad-CAM of the classifiers (``cxr_monai.apps.classification.heatmaps``): the maps are the class's
evidence normalised to [0, 1] (never MONAI's inverted default), Grad-CAM is taken one dense block before CAM, and the
dual branch gives one map per view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_monai.apps.classification import ClassHeatmaps, resize_heatmap
from cxr_monai.networks import CXRDenseNet121, DualBranchDenseNet121

SIZE = 64
TINY = {"downsample_input": False, "init_features": 8, "growth_rate": 4, "block_config": (2, 2), "bn_size": 2}


def _densenet() -> CXRDenseNet121:
    torch.manual_seed(0)
    return CXRDenseNet121(in_channels=1, num_classes=3, **TINY).eval()


def _hot_cell_of(raw: torch.Tensor, heatmap: torch.Tensor) -> float:
    """The map's largest value inside the working-size cell where the raw (feature-grid) evidence is largest."""
    hot = np.unravel_index(int(raw.argmax()), raw.shape)
    cell = SIZE // raw.shape[0]
    return float(heatmap[hot[0] * cell: (hot[0] + 1) * cell, hot[1] * cell: (hot[1] + 1) * cell].max())


def test_cam_is_the_class_map_normalised_not_inverted():
    network = _densenet()
    image = torch.rand(1, SIZE, SIZE)
    [cam] = ClassHeatmaps(network, "cam")(image, [1])["frontal"]
    assert cam.shape == (SIZE, SIZE) and float(cam.max()) == pytest.approx(1.0) and float(cam.min()) >= 0
    with torch.no_grad():  # the hot spot is where the class's linear head on the last feature map is largest
        features = network.class_layers.relu(network.features(image[None]))
        raw = torch.einsum("bchw,c->bhw", features, network.class_layers.out.weight[1])[0]
    assert _hot_cell_of(raw, cam) > 0.9
    assert not network.training


def test_gradcam_maps_dense_block_3_by_hand_and_keeps_no_gradient():
    network = _densenet().train()
    image = torch.rand(1, SIZE, SIZE)
    with torch.no_grad():  # as inside an evaluator's iteration
        [grad_cam] = ClassHeatmaps(network, "gradcam")(image, [1])["frontal"]
    assert network.training and all(p.grad is None for p in network.parameters())
    assert network.gradcam_target_layer == "features.transition1.relu"

    network.eval()
    stored = {}
    handle = network.features.transition1.relu.register_forward_hook(lambda m, i, o: stored.update(a=o))
    logit = network(image[None])[0, 1]  # a class with evidence (a negative logit may map to zeros)
    handle.remove()
    features = stored["a"]
    (gradient,) = torch.autograd.grad(logit, features)
    raw = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1))[0].detach()
    assert raw.shape[0] == 2 * network.class_layers.relu(network.features(image[None])).shape[2]  # twice CAM's grid
    assert grad_cam.shape == (SIZE, SIZE) and float(grad_cam.max()) == pytest.approx(1.0)
    assert _hot_cell_of(raw, grad_cam) > 0.9


def test_dual_branch_gives_a_map_per_view_and_refuses_cam():
    torch.manual_seed(0)
    network = DualBranchDenseNet121(num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match="neither view"):
        ClassHeatmaps(network, "cam")
    heatmaps = ClassHeatmaps(network, "gradcam")
    frontal, lateral = torch.rand(1, SIZE, SIZE), torch.rand(1, SIZE, SIZE)
    maps = heatmaps(frontal, [0, 2], lateral, torch.tensor(1.0))
    assert len(maps["frontal"]) == len(maps["lateral"]) == 2 and maps["lateral"][1].shape == (SIZE, SIZE)
    expected = network.branch_cams(frontal[None], lateral[None], class_idx=2)
    torch.testing.assert_close(maps["lateral"][1], expected["lateral"][0, 0])
    assert set(heatmaps(frontal, [0], lateral, torch.tensor(0.0))) == {"frontal"}  # flagged absent: no lateral map
    assert set(heatmaps(frontal, [0])) == {"frontal"}


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="one of"):
        ClassHeatmaps(_densenet(), "lrp")
    with pytest.raises(ValueError, match="names no cam_target_layer"):
        ClassHeatmaps(torch.nn.Linear(2, 2), "cam")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ClassHeatmaps(_densenet())(torch.rand(SIZE, SIZE), [0])
    assert resize_heatmap(torch.ones(4, 4) * 2, (8, 6)).max() == 1.0  # clamped to [0, 1]
