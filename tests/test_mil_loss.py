"""ClaSegNet's MIL losses (issue #13, seed 004): the mask likelihood and the noisy-or in log space, Dice, baseline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from cxr_monai.losses import (
    ClaSegNetLoss,
    MaskMILLoss,
    image_label_from_mask,
    image_probability,
    mask_log_likelihood,
    mask_to_regions,
    noisy_or_log_probabilities,
    noisy_or_logit,
)


def direct_mask_probability(logits: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The seed's prod_{j in N} p_ij * prod_{j in M \\ N} (1 - p_ij), multiplied out in probability space."""
    p = torch.sigmoid(logits).flatten(1)
    n = regions.flatten(1).bool()
    return torch.where(n, p, 1 - p).prod(dim=1)


def random_masks(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    for i in range(1, batch):  # image 0 stays negative
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        height, width = torch.randint(1, size // 2, (2,), generator=generator).tolist()
        mask[i, 0, top:top + height, left:left + width] = 1
    return mask


def test_loss_is_minus_log_of_the_direct_product_on_small_maps():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 4, 4, generator=generator, dtype=torch.float64) * 3
    mask = random_masks(5, 64, generator)
    loss = MaskMILLoss(reduction="none")
    regions = loss.region_targets(logits, mask)
    assert regions.shape == logits.shape and regions[0].sum() == 0 and regions[1:].flatten(1).sum(1).min() >= 1
    direct = direct_mask_probability(logits, regions)
    assert direct.min() > 1e-30  # no underflow at this size: the reference is exact
    torch.testing.assert_close(loss(logits, mask), -torch.log(direct))
    torch.testing.assert_close(MaskMILLoss()(logits, mask), -torch.log(direct).mean())
    torch.testing.assert_close(MaskMILLoss(reduction="sum")(logits, mask), -torch.log(direct).sum())
    torch.testing.assert_close(MaskMILLoss(normalize_regions=True)(logits, mask), -torch.log(direct).mean() / 16)


def test_negative_image_gives_the_noisy_or_of_a_negative():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    per_image = MaskMILLoss(reduction="none")(logits, torch.zeros(3, 1, 32, 32))
    # -log prod_M (1 - p_ij) = -log(1 - P_i) = BCE of the image logit against 0
    torch.testing.assert_close(per_image, -torch.log1p(-image_probability(logits)).flatten())
    torch.testing.assert_close(per_image, F.softplus(noisy_or_logit(logits)).flatten())


def test_loss_is_the_per_region_bce_sum():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 1, 16, 16, generator=generator) * 5
    mask = random_masks(4, 512, generator)
    targets = mask_to_regions(mask, (16, 16))
    bce_sum = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    torch.testing.assert_close(MaskMILLoss()(logits, mask), bce_sum / 4)
    torch.testing.assert_close(-mask_log_likelihood(logits, targets).sum(), bce_sum)


@pytest.mark.parametrize("scale", [60.0, 1e4])
def test_no_underflow_on_16x16_maps_with_extreme_logits(scale):
    generator = torch.Generator().manual_seed(3)
    mask = random_masks(3, 512, generator)
    targets = mask_to_regions(mask, (16, 16))
    # every region confidently wrong, or confidently right but for a single one: the direct product is 0
    for logits in (scale * (1 - 2 * targets), scale * (2 * targets - 1)):
        logits = logits.clone()
        logits[:, 0, 0, 0] = -scale * (2 * targets[:, 0, 0, 0] - 1)
        assert (direct_mask_probability(logits, targets) == 0).all()
        logits.requires_grad_(True)
        loss = MaskMILLoss()(logits, mask)
        wrong = (logits.detach() * (2 * targets - 1) < 0).flatten(1).sum(1).to(torch.float64)
        assert math.isfinite(loss.item())
        # each wrong region costs softplus(scale) ~ scale, each right one softplus(-scale) ~ 0
        assert loss.item() == pytest.approx((wrong * scale).mean().item(), rel=1e-5)
        loss.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() > 0


def test_gradcheck_in_float64():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 1, 4, 6, dtype=torch.float64)
    mask[1, 0, 0:3, 1:2] = 1  # regions (0, 0) and (1, 0) of image 1
    assert torch.autograd.gradcheck(lambda z: MaskMILLoss()(z, mask), (logits,))
    assert torch.autograd.gradcheck(noisy_or_logit, (logits,))
    large = (logits.detach() * 20).requires_grad_(True)  # saturated regions
    assert torch.autograd.gradcheck(noisy_or_logit, (large,))
    # the analytic gradient: d(-log p)/dz_j = p_j - t_j (the per-region BCE's)
    loss = MaskMILLoss(reduction="sum")(logits, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, torch.sigmoid(logits) - mask_to_regions(mask, (2, 3)).double())


def test_mask_reduction_to_the_region_grid():
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 0, 0] = 1  # one pixel of region (0, 0)
    mask[0, 0, 32:64, 32:56] = 1  # 3/4 of region (1, 1)
    mask[0, 0, 0:32, 32:40] = 0.4  # below the threshold: an interpolated edge
    assert mask_to_regions(mask, (2, 2)).flatten().tolist() == [1, 0, 0, 1]
    assert mask_to_regions(mask, (2, 2), min_coverage=0.5).flatten().tolist() == [0, 0, 0, 1]
    assert mask_to_regions(mask, (2, 2), min_coverage=0.8).flatten().tolist() == [0, 0, 0, 0]
    assert mask_to_regions(mask, (2, 2), threshold=0.3).flatten().tolist() == [1, 1, 0, 1]
    grid = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert torch.equal(mask_to_regions(grid, (2, 2)), grid)  # a mask at the grid's size is the grid
    assert image_label_from_mask(mask).tolist() == [[1.0]]
    assert image_label_from_mask(torch.full((2, 1, 8, 8), 0.4)).tolist() == [[0.0], [0.0]]
    loss = MaskMILLoss()
    with pytest.raises(ValueError, match="smaller than the region grid"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        loss(torch.zeros(2, 1, 2, 2), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="min_coverage"):
        MaskMILLoss(min_coverage=2.0)
    with pytest.raises(ValueError, match="reduction"):
        MaskMILLoss(reduction="median")


def test_noisy_or_in_log_space():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 2, 4, 4, generator=generator, dtype=torch.float64) * 4
    p = torch.sigmoid(logits).flatten(2)
    direct = 1 - (1 - p).prod(dim=2)
    log_p, log_q = noisy_or_log_probabilities(logits)
    assert log_p.shape == (3, 2)
    torch.testing.assert_close(log_p.exp(), direct)
    torch.testing.assert_close(log_q.exp(), 1 - direct)
    torch.testing.assert_close(torch.sigmoid(noisy_or_logit(logits)), direct)
    torch.testing.assert_close(image_probability(logits), direct)
    # every region near 0 (float32): 1 - prod(1 - p) and log(-expm1(s)) give 0 and -inf; the telescoping sum does not
    tiny = torch.full((1, 1, 16, 16), -120.0)
    s = F.logsigmoid(-tiny).sum()
    assert torch.log(-torch.expm1(s)).item() == -math.inf
    assert noisy_or_logit(tiny).item() == pytest.approx(-120.0 + math.log(256), abs=1e-4)
    # every region near 1: the logit keeps growing with the evidence instead of saturating
    assert noisy_or_logit(torch.full((1, 1, 16, 16), 50.0)).item() == pytest.approx(256 * 50, rel=1e-5)
    half = noisy_or_logit(torch.full((1, 1, 16, 16), -20.0, dtype=torch.float16))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(-20 + math.log(256), abs=1e-3)


def test_clasegnet_loss_terms_and_weights():
    generator = torch.Generator().manual_seed(6)
    mask = random_masks(4, 64, generator)
    outputs = {
        "regions": torch.randn(4, 1, 2, 2, generator=generator, requires_grad=True),
        "segmentation": torch.randn(4, 1, 64, 64, generator=generator, requires_grad=True),
    }
    outputs["image"] = noisy_or_logit(outputs["regions"])
    mil = MaskMILLoss()(outputs["regions"], mask)
    dice = DiceLoss(sigmoid=True, batch=True)(outputs["segmentation"], mask)
    bce = F.binary_cross_entropy_with_logits(outputs["segmentation"], mask)
    loss_fn = ClaSegNetLoss(mil_weight=0.5, segmentation_weight=2.0, segmentation_bce_weight=0.25)
    loss = loss_fn(outputs, mask)
    torch.testing.assert_close(loss, 0.5 * mil + 2.0 * (dice + 0.25 * bce))
    terms = loss_fn.last_terms
    assert set(terms) == {"mil", "dice", "segmentation_bce", "segmentation", "loss"}
    assert not any(value.requires_grad for value in terms.values())
    torch.testing.assert_close(terms["mil"], mil.detach())
    loss.backward()
    assert outputs["regions"].grad is not None and outputs["segmentation"].grad is not None
    # a mask with interpolated values: binarised at 0.5 for the Dice and BCE as for the regions
    soft = mask * 0.9 + 0.05
    torch.testing.assert_close(ClaSegNetLoss()(outputs, soft), ClaSegNetLoss()(outputs, mask))
    # per-image Dice when asked
    per_image = ClaSegNetLoss(mil_weight=0.0, segmentation_bce_weight=0.0, dice_batch=False)(outputs, mask)
    torch.testing.assert_close(per_image, DiceLoss(sigmoid=True)(outputs["segmentation"], mask))


def test_baseline_gets_bce_of_the_image_label():
    mask = torch.zeros(3, 1, 32, 32)
    mask[1, 0, 5, 5] = 1
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    loss_fn = ClaSegNetLoss(image_weight=3.0)
    loss = loss_fn({"image": logits}, mask)
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0], [1.0], [0.0]]))
    torch.testing.assert_close(loss, 3.0 * expected)
    assert set(loss_fn.last_terms) == {"image_bce", "loss"}
    with pytest.raises(KeyError, match="regions"):
        loss_fn({"segmentation": torch.zeros(3, 1, 32, 32)}, mask)
    with pytest.raises(TypeError, match="output dict"):
        loss_fn(logits, mask)
    with pytest.raises(ValueError, match="mil_weight"):
        ClaSegNetLoss(mil_weight=-1.0)


def test_half_precision_logits_are_summed_in_float32():
    generator = torch.Generator().manual_seed(7)
    logits = (torch.randn(2, 1, 16, 16, generator=generator) * 8).half()
    mask = random_masks(2, 512, generator)
    loss = MaskMILLoss()(logits, mask)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, MaskMILLoss()(logits.float(), mask))


def test_supervised_trainer_calls_it_with_the_mask_as_label():
    from monai.engines import SupervisedTrainer

    from cxr_monai.networks import ClaSegNet

    torch.manual_seed(0)
    network = ClaSegNet(layers=(1, 1, 1, 1), width=0.125, decoder_channels=(16, 8, 8, 8, 8))
    mask = torch.zeros(2, 1, 64, 64)
    mask[1, 0, 10:30, 40:50] = 1
    data = [{"image": torch.rand(2, 1, 64, 64), "label": mask}]
    loss_fn = ClaSegNetLoss()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=network,
        optimizer=torch.optim.Adam(network.parameters(), 1e-4), loss_function=loss_fn, amp=False, decollate=False,
    )
    trainer.run()
    assert math.isfinite(trainer.state.output["loss"].item())
    assert set(loss_fn.last_terms) == {"mil", "dice", "segmentation_bce", "segmentation", "loss"}
