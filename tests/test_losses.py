from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cxr_monai.apps.inpainting import BorderWeightedL2Loss, ContextEncoderLoss
from cxr_monai.losses import AdversarialBCELoss, gan_diagnostics


def test_unit_weights_give_plain_mse():
    torch.manual_seed(0)
    prediction, target = torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)
    loss = BorderWeightedL2Loss()(prediction, target, torch.ones(3, 1, 64, 64))
    assert loss.item() == pytest.approx(F.mse_loss(prediction, target).item(), rel=1e-6)
    assert BorderWeightedL2Loss(band_weight=1.0)(prediction, target).item() == pytest.approx(loss.item(), rel=1e-6)


def test_band_weighting_by_hand():
    # 8x8 hole, 2 px band of weight 10: error 1 at a band pixel, error 2 at an interior pixel
    target = torch.zeros(1, 1, 8, 8)
    prediction = target.clone()
    prediction[0, 0, 0, 5] = 1.0
    prediction[0, 0, 4, 3] = 2.0
    weighted_sum = 10 * 1.0**2 + 1 * 2.0**2
    weight_sum = 16 * 1 + 48 * 10  # 4x4 interior, 48 band pixels
    expected = {"weighted_mean": weighted_sum / weight_sum, "mean": weighted_sum / 64, "sum": weighted_sum}
    for reduction, value in expected.items():
        loss = BorderWeightedL2Loss(band=2, band_weight=10.0, reduction=reduction)(prediction, target)
        assert loss.item() == pytest.approx(value, rel=1e-6), reduction
    elementwise = BorderWeightedL2Loss(band=2, reduction="none")(prediction, target)
    assert elementwise[0, 0, 0, 5].item() == 10.0 and elementwise[0, 0, 4, 3].item() == 4.0


def test_default_map_matches_seed_and_pathak_scale():
    loss = BorderWeightedL2Loss()
    weight = loss.default_weight(64, 64)
    assert weight.shape == (1, 1, 64, 64)
    assert (weight == 10).sum().item() == 64 * 64 - 56 * 56
    assert weight[0, 0, 4:60, 4:60].eq(1).all() and weight[0, 0, 3, 3:61].eq(10).all()
    assert weight.sum().item() == 12736
    torch.manual_seed(0)
    prediction, target = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    pathak = BorderWeightedL2Loss(reduction="mean")(prediction, target)
    assert pathak.item() == pytest.approx(loss(prediction, target).item() * 12736 / 4096, rel=1e-5)
    assert loss(prediction, target, weight.expand(2, 1, 64, 64)).item() == pytest.approx(
        loss(prediction, target).item(), rel=1e-6
    )


def test_full_patch_weight_map_is_the_mask_of_eq_1():
    torch.manual_seed(0)
    full_prediction, full_target = torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128)
    loss = BorderWeightedL2Loss()
    hole_weight = loss.default_weight(64, 64)
    full_weight = torch.zeros(1, 1, 128, 128)
    full_weight[..., 32:96, 32:96] = hole_weight
    centre = (..., slice(32, 96), slice(32, 96))
    assert loss(full_prediction, full_target, full_weight).item() == pytest.approx(
        loss(full_prediction[centre], full_target[centre]).item(), rel=1e-6
    )


def test_l2_loss_gradient_and_errors():
    prediction = torch.zeros(2, 1, 64, 64, requires_grad=True)
    BorderWeightedL2Loss()(prediction, torch.ones(2, 1, 64, 64)).backward()
    assert prediction.grad[0, 0, 0, 0] == pytest.approx(10 * prediction.grad[0, 0, 32, 32].item())
    loss = BorderWeightedL2Loss()
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="broadcast"):
        loss(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="band"):
        BorderWeightedL2Loss(band=5)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        BorderWeightedL2Loss(reduction="median")


def test_adversarial_bce_from_logits():
    adversarial = AdversarialBCELoss()
    zeros = torch.zeros(4, 1)
    assert adversarial(zeros, target_is_real=True).item() == pytest.approx(math.log(2))
    assert adversarial.discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    logits = torch.tensor([[-3.0], [0.5], [2.0]])
    assert adversarial.generator_loss(logits).item() == pytest.approx(
        -torch.log(torch.sigmoid(logits)).mean().item(), rel=1e-6
    )
    # saturated discriminator: finite, and equal to the logit margin
    assert adversarial.generator_loss(torch.full((2, 1), -200.0)).item() == pytest.approx(200.0)
    assert adversarial.discriminator_loss(torch.full((2, 1), 200.0), torch.full((2, 1), -200.0)).item() == 0.0


def test_joint_loss_weights_and_parts():
    torch.manual_seed(0)
    prediction, target, logits = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64), torch.randn(2, 1)
    joint = ContextEncoderLoss()
    assert (joint.lambda_l2, joint.lambda_adv) == (0.998, 0.002)
    out = joint(prediction, target, logits)
    assert out.l2.item() == pytest.approx(BorderWeightedL2Loss()(prediction, target).item())
    assert out.adversarial.item() == pytest.approx(F.softplus(-logits).mean().item(), rel=1e-6)
    assert out.total.item() == pytest.approx(0.998 * out.l2.item() + 0.002 * out.adversarial.item(), rel=1e-6)
    l2_only = joint(prediction, target)
    assert l2_only.adversarial.item() == 0.0
    assert l2_only.total.item() == pytest.approx(0.998 * out.l2.item(), rel=1e-6)
    total, l2, adversarial = ContextEncoderLoss(lambda_l2=1.0, lambda_adv=0.5)(prediction, target, logits)
    assert total.item() == pytest.approx(l2.item() + 0.5 * adversarial.item(), rel=1e-6)


def test_joint_loss_under_autocast_backpropagates_to_both_inputs():
    prediction = torch.rand(2, 1, 64, 64, requires_grad=True)
    logits = torch.zeros(2, 1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ContextEncoderLoss()(prediction.bfloat16(), torch.rand(2, 1, 64, 64), logits.bfloat16())
    assert out.total.dtype == torch.float32
    out.total.backward()
    assert prediction.grad is not None and logits.grad is not None


def test_gan_diagnostics():
    half = gan_diagnostics(torch.zeros(8, 1), torch.zeros(8, 1))
    assert half["minimax_value"].item() == pytest.approx(-math.log(4))
    assert half["d_real"].item() == pytest.approx(0.5) and half["d_fake"].item() == pytest.approx(0.5)
    real, fake = torch.tensor([[2.0], [1.0]]), torch.tensor([[-1.0], [0.5]])
    out = gan_diagnostics(real, fake)
    expected = torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean()
    assert out["minimax_value"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["d_fake"].item() == pytest.approx(torch.sigmoid(fake).mean().item())
    saturated = gan_diagnostics(torch.full((2, 1), -300.0), torch.full((2, 1), 300.0))
    assert saturated["minimax_value"].item() == pytest.approx(-600.0)
    assert not saturated["d_real"].requires_grad


def test_hinge_loss_by_hand_and_its_generator_term():
    from cxr_monai.losses import AdversarialHingeLoss

    hinge = AdversarialHingeLoss()
    logits = torch.tensor([[1.5], [-0.5], [0.0]])
    assert hinge(logits, True) == pytest.approx((0.0 + 1.5 + 1.0) / 3)  # relu(1 - x)
    assert hinge(logits, False) == pytest.approx((2.5 + 0.5 + 1.0) / 3)  # relu(1 + x)
    assert hinge.generator_loss(logits) == pytest.approx(-1.0 / 3)
    assert hinge.discriminator_loss(logits, logits) == pytest.approx(hinge(logits, True) + hinge(logits, False))
    x = logits.clone().requires_grad_()
    hinge.generator_loss(x).backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -1 / 3))


def test_adversarial_losses_and_diagnostics_average_over_the_scales_of_a_multiscale_discriminator():
    from cxr_monai.losses import AdversarialHingeLoss

    coarse, fine = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 8, 8)
    for loss in (AdversarialBCELoss(), AdversarialHingeLoss()):
        for real in (True, False):
            assert loss([coarse, fine], real) == pytest.approx(float((loss(coarse, real) + loss(fine, real)) / 2))
        assert loss.generator_loss([coarse, fine]) == pytest.approx(
            float((loss.generator_loss(coarse) + loss.generator_loss(fine)) / 2))
    pooled = gan_diagnostics([coarse, fine], [fine, coarse])
    assert pooled["d_real"] == pytest.approx(float(torch.sigmoid(torch.cat([coarse.flatten(), fine.flatten()])).mean()))
    with pytest.raises(ValueError, match="no logits"):
        AdversarialBCELoss()([], True)
